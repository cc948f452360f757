"""One SQLite-store measurement, run in its own interpreter by ``bench_sqlite.py``.

The modes (``seq``, ``many``, ``submit``, ``worker``) are ``_store_worker.py``'s;
this file opens the store (``--db``, ``--durability``): on a fresh file for every
mode but ``worker``, which opens the file ``submit`` filled. It reports the
store's commits.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from _store_worker import Target, main

from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    import argparse


def fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


def open_store(args: argparse.Namespace, mode: str) -> SQLiteStore:
    if mode == "worker":
        return SQLiteStore(args.db, durability=args.durability, create=False)
    fresh(args.db)
    return SQLiteStore(args.db, durability=args.durability)


def store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--durability", choices=["flush", "fsync"], default="fsync")


TARGET = Target(
    open=open_store,
    counters=lambda store: {"commits": store.transactions},
    warmup=5,
    default_n=200,
)

if __name__ == "__main__":
    sys.exit(main(TARGET, store_args))
