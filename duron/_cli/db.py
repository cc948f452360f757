"""``duron db migrate URL``: create or upgrade a PostgreSQL store's schema.

A PostgreSQL store never creates its tables on first use: the application's
database user may lack the right to, and several processes starting at once should
not race to. Run this once per deploy (it is safe to run again: applied versions
are recorded in the ``schema_version`` table and skipped).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio

from duron._errors import DuronError, UsageError
from duron._redact import redact

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "db",
        help="manage a PostgreSQL store's schema (migrate)",
        description="Manage the database of a PostgreSQL job store.",
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "migrate",
        help="create the store's tables, or upgrade them to this Duron's version",
        description="Create Duron's schema and tables in a PostgreSQL database, or "
        "upgrade them to this Duron's schema version. Safe to run again.",
    )
    p.add_argument(
        "url",
        help="postgresql://user:password@host:5432/dbname (add ?schema=NAME for "
        "tables outside the default schema 'duron')",
    )
    p.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    url: str = args.url
    try:
        scheme = url.partition("://")[0]
        if scheme == "sqlite":
            raise UsageError(
                f"{redact(url)!r}: a SQLite store creates its tables when the application "
                "first opens it; `duron db migrate` is for PostgreSQL stores"
            )
        if scheme not in ("postgresql", "postgres"):
            raise UsageError(
                f"{redact(url)!r} is not a PostgreSQL URL; write "
                "postgresql://user:password@host:5432/dbname"
            )
        from duron.contrib._postgres import store_from_url
        from duron.contrib._postgres_schema import SCHEMA_VERSION

        store = store_from_url(url)

        async def run() -> list[int]:
            try:
                return await store.migrate()
            finally:
                await store.close()

        applied = anyio.run(run)
    except (DuronError, ValueError, ImportError) as exc:
        print(f"duron db: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    if applied:
        versions = ", ".join(str(v) for v in applied)
        print(
            f"{store.label}: schema {store.schema} migrated to version "
            f"{SCHEMA_VERSION} (applied {versions})"
        )
    else:
        print(
            f"{store.label}: schema {store.schema} is up to date "
            f"(version {SCHEMA_VERSION})"
        )
    return 0
