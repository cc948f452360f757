"""Where the PostgreSQL tests find their server, and a fresh schema per test.

The server is the one ``DURON_TEST_POSTGRES_DSN`` names (``.ci/run`` starts the
local cluster and sets it). Without the variable, the DSN ``.ci/postgres.sh`` sets
up is tried; the tests skip, saying how to run them, only when no server answers
there. A DSN that is set but does not answer is an error, never a skip.

Every test gets a schema of its own (``duron_t_<random>``), dropped at the end, so
runs and tests never see each other's jobs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ENV = "DURON_TEST_POSTGRES_DSN"
LOCAL_DSN = "postgresql://duron_test:duron_test@127.0.0.1:5432/duron_test"
SKIP_REASON = (
    f"no PostgreSQL server: set {ENV}=postgresql://user:password@host/dbname, or "
    'run .ci/run (or `eval "$(bash .ci/postgres.sh)"`) to start the local one'
)


def _find_dsn() -> str | None:
    dsn = os.environ.get(ENV)
    if dsn:
        return dsn
    try:
        import psycopg
    except ImportError:
        return None
    try:
        psycopg.connect(LOCAL_DSN, connect_timeout=2).close()
    except psycopg.Error:
        return None
    return LOCAL_DSN


DSN = _find_dsn()
requires_postgres = pytest.mark.skipif(DSN is None, reason=SKIP_REASON)


def dsn() -> str:
    assert DSN is not None, SKIP_REASON
    return DSN


def new_schema() -> str:
    return f"duron_t_{secrets.token_hex(6)}"


def sql(statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement on a connection of its own (committed), its rows."""
    import psycopg

    with psycopg.connect(dsn(), autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params or None)
        return cur.fetchall() if cur.description else []


def drop_schema(name: str) -> None:
    sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextmanager
def schema_name() -> Iterator[str]:
    """A schema name no other test uses, dropped (with what it holds) at the end."""
    name = new_schema()
    try:
        yield name
    finally:
        drop_schema(name)
