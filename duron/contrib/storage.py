"""Storage backends: ``from duron.contrib.storage import FileLogStorage``."""

# No `from __future__ import annotations` here: it would export a name `annotations`.
from duron._storage import LogStorage
from duron.contrib._file import Durability, FileLogStorage
from duron.contrib._memory import MemoryLogStorage
from duron.contrib._postgres import PostgresStore
from duron.contrib._postgres_log import PostgresLog
from duron.contrib._sqlite import SQLiteStore
from duron.contrib._sqlite_log import SQLiteLog

__all__ = [
    "Durability",
    "FileLogStorage",
    "LogStorage",
    "MemoryLogStorage",
    "PostgresLog",
    "PostgresStore",
    "SQLiteLog",
    "SQLiteStore",
]
