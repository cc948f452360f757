"""The SQL job stores as a test sees them: a store on a fresh database, and the few
things a test does to that database behind the store's back.

The ``backend`` fixture (tests/conftest.py) gives a test one of these per store:
SQLite in a temporary file, and PostgreSQL in a schema of its own when a server
answers (skipped, saying how to start one, only when none does).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any, Protocol

import anyio

from duron.contrib.storage import PostgresStore, SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import drop_schema, dsn, new_schema, sql

Store = SQLiteStore | PostgresStore
"""A SQL job store (``duron._jobstore.JobStore``, and ``log()`` with the wider
arguments both take: ``list_jobs`` of several statuses, ``prune`` of every ended
one)."""


class Backend(Protocol):
    name: str
    """How the store's own messages name its kind ("SQLite store ... is closed")."""

    async def store(self, **options: Any) -> Store:
        """A store object on the test's database: a lease owner of its own, with
        the store's constructor ``options`` (its default lease unless given)."""
        ...

    def expire(self, job_id: str) -> None:
        """Make the job's lease run out, as if its owner had stalled past it."""
        ...

    def take_over(self, job_id: str, owner: str = "other:1:0") -> None:
        """Give the job to another owner under a newer epoch."""
        ...

    def set_times(self, job_id: str, created: float, updated: float) -> None:
        """Set the job's created and updated times (seconds since the epoch)."""
        ...

    def logged_jobs(self) -> list[str]:
        """The ids of the jobs with entries in the database, sorted."""
        ...

    def entry_count(self) -> int:
        """How many entries the database holds, of every job."""
        ...

    async def aclose(self) -> None: ...


class SQLiteBackend:
    name = "SQLite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stores: list[SQLiteStore] = []

    async def store(self, **options: Any) -> Store:
        store = SQLiteStore(self.path, **options)
        self._stores.append(store)
        return store

    def _sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path, isolation_level=None) as db:
            return db.execute(statement, params).fetchall()

    def expire(self, job_id: str) -> None:
        self._sql("UPDATE jobs SET lease_expires = 0 WHERE id = ?", job_id)

    def take_over(self, job_id: str, owner: str = "other:1:0") -> None:
        self._sql(
            "UPDATE jobs SET lease_owner = ?, epoch = epoch + 1 WHERE id = ?",
            owner,
            job_id,
        )

    def set_times(self, job_id: str, created: float, updated: float) -> None:
        self._sql(
            "UPDATE jobs SET created = ?, updated = ? WHERE id = ?",
            created,
            updated,
            job_id,
        )

    def logged_jobs(self) -> list[str]:
        rows = self._sql("SELECT DISTINCT job_id FROM entries ORDER BY job_id")
        return [str(job_id) for (job_id,) in rows]

    def entry_count(self) -> int:
        [(count,)] = self._sql("SELECT count(*) FROM entries")
        return int(count)

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()


class PostgresBackend:
    name = "PostgreSQL"

    def __init__(self) -> None:
        self.schema = new_schema()
        self._stores: list[PostgresStore] = []

    async def store(self, **options: Any) -> Store:
        store = PostgresStore(dsn(), schema=self.schema, pool_size=2, **options)
        if not self._stores:
            await store.migrate()
        self._stores.append(store)
        return store

    def expire(self, job_id: str) -> None:
        sql(
            f'UPDATE "{self.schema}".jobs SET lease_expires = now() - '
            "interval '1 second' WHERE id = %s",
            job_id,
        )

    def take_over(self, job_id: str, owner: str = "other:1:0") -> None:
        sql(
            f'UPDATE "{self.schema}".jobs SET lease_owner = %s, '
            "epoch = epoch + 1 WHERE id = %s",
            owner,
            job_id,
        )

    def set_times(self, job_id: str, created: float, updated: float) -> None:
        sql(
            f'UPDATE "{self.schema}".jobs SET created = to_timestamp(%s), '
            "updated = to_timestamp(%s) WHERE id = %s",
            created,
            updated,
            job_id,
        )

    def logged_jobs(self) -> list[str]:
        rows = sql(
            f'SELECT DISTINCT job_id FROM "{self.schema}".entries ORDER BY job_id'
        )
        return [str(job_id) for (job_id,) in rows]

    def entry_count(self) -> int:
        [(count,)] = sql(f'SELECT count(*) FROM "{self.schema}".entries')
        return int(str(count))

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()
        await anyio.to_thread.run_sync(drop_schema, self.schema)
