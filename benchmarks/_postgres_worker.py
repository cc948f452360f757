"""One PostgreSQL-store measurement, run in its own interpreter by ``bench_postgres.py``.

The modes (``seq``, ``many``, ``submit``, ``worker``) are ``_store_worker.py``'s;
this file opens the store (``--dsn``, ``--schema``, already migrated) and reports
its flushes (append statements; in ``seq`` every effect is one round trip and one
commit) and the appends they carried.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from _store_worker import Target, main

from duron.contrib.storage import PostgresStore

if TYPE_CHECKING:
    import argparse


def open_store(args: argparse.Namespace, mode: str) -> PostgresStore:
    return PostgresStore(args.dsn, schema=args.schema, pool_size=8)


def store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", required=True)
    p.add_argument("--schema", required=True)


TARGET = Target(
    open=open_store,
    counters=lambda store: {"flushes": store.flushes, "appends": store.appends},
    warmup=10,
    default_n=300,
)

if __name__ == "__main__":
    sys.exit(main(TARGET, store_args))
