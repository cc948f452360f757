"""Storage backends: ``from duron.contrib.storage import FileLogStorage``."""

from __future__ import annotations

from duron._storage import LogStorage
from duron.contrib._file import Durability, FileLogStorage
from duron.contrib._memory import MemoryLogStorage

__all__ = ["Durability", "FileLogStorage", "LogStorage", "MemoryLogStorage"]
