"""What a worker learns from a job store about the leases it holds, on every SQL store.

A worker asks ``heartbeat()`` about the jobs it runs while those jobs may end (and
release their lease) at the same moment, and ``claim()`` while a job it runs may
have stalled past its lease. Each test runs on the SQLite store and, when a server
answers, the PostgreSQL store; the races are played by calling the store's methods
in the racy order, and a lease runs out by setting its expiry in the database.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import anyio
import pytest

import duron
from duron._jobstore import Heartbeat, JobStore
from duron.contrib.storage import PostgresStore, SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import drop_schema, dsn, new_schema, requires_postgres, sql

pytestmark = pytest.mark.anyio


@duron.effect
async def double(i: int) -> int:
    return i * 2


@duron.durable
async def doubled(ctx: duron.Context, i: int) -> int:
    return await ctx.run(double, i)


class Backend(Protocol):
    async def store(self) -> JobStore:
        """A store object on the test's database: a lease owner of its own."""
        ...

    def expire(self, job_id: str) -> None:
        """Make the job's lease run out, as if its owner had stalled past it."""
        ...

    def take_over(self, job_id: str) -> None:
        """Give the job to another owner under a newer epoch."""
        ...

    async def aclose(self) -> None: ...


class SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stores: list[SQLiteStore] = []

    async def store(self) -> JobStore:
        # A long lease: no renewal runs between a test's steps.
        store = SQLiteStore(self.path, lease=60)
        self._stores.append(store)
        return store

    def _sql(self, statement: str, job_id: str) -> None:
        with sqlite3.connect(self.path, isolation_level=None) as db:
            db.execute(statement, (job_id,))

    def expire(self, job_id: str) -> None:
        self._sql("UPDATE jobs SET lease_expires = 0 WHERE id = ?", job_id)

    def take_over(self, job_id: str) -> None:
        self._sql(
            "UPDATE jobs SET lease_owner = 'other:1:0', epoch = epoch + 1 WHERE id = ?",
            job_id,
        )

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()


class PostgresBackend:
    def __init__(self) -> None:
        self.schema = new_schema()
        self._stores: list[PostgresStore] = []

    async def store(self) -> JobStore:
        store = PostgresStore(dsn(), schema=self.schema, lease=60, pool_size=2)
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

    def take_over(self, job_id: str) -> None:
        sql(
            f"UPDATE \"{self.schema}\".jobs SET lease_owner = 'other:1:0', "
            "epoch = epoch + 1 WHERE id = %s",
            job_id,
        )

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()
        await anyio.to_thread.run_sync(drop_schema, self.schema)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=requires_postgres)],
)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    b: Backend = (
        SQLiteBackend(tmp_path / "jobs.db")
        if request.param == "sqlite"
        else PostgresBackend()
    )
    try:
        yield b
    finally:
        await b.aclose()


async def run_claimed(store: JobStore, job_id: str) -> object:
    """Run a job this store claimed to its end, as a worker does."""
    async with doubled.invoke(store.log(job_id)) as job:
        await job.resume()
        return await job.wait()


async def test_a_job_released_while_its_heartbeat_was_asked_is_not_lost(
    backend: Backend,
) -> None:
    store = await backend.store()
    await store.submit(doubled, 1, job_id="ends")
    await store.submit(doubled, 2, job_id="taken")
    claims = await store.claim(2)
    assert [c.job_id for c in claims] == ["ends", "taken"]
    # The worker names the jobs it runs; before the store reads their rows, one
    # of them ends here and releases its lease, and another owner takes the other.
    running = [c.job_id for c in claims]
    assert await run_claimed(store, "ends") == 2
    backend.take_over("taken")
    beat = await store.heartbeat(running)
    assert beat == Heartbeat(lost=frozenset({"taken"}))


async def test_a_job_whose_lease_ran_out_is_not_claimed_again_by_its_holder(
    backend: Backend,
) -> None:
    store = await backend.store()
    await store.submit(doubled, 1, job_id="j")
    [claim] = await store.claim(1)
    assert (claim.job_id, claim.epoch) == ("j", 1)
    # The holder stalled past its lease; it still runs the job, so claiming it
    # again would run it twice in one worker.
    backend.expire("j")
    assert await store.claim(1) == []
    info = await store.get("j")
    assert (info.lease_owner, info.epoch) == (store.owner, 1)
    assert await store.heartbeat(["j"]) == Heartbeat()
    # Another owner may take it over, and then the holder has lost it.
    other = await backend.store()
    [taken] = await other.claim(1)
    assert (taken.job_id, taken.epoch) == ("j", 2)
    assert await store.heartbeat(["j"]) == Heartbeat(lost=frozenset({"j"}))
