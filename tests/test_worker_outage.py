"""A store that cannot be reached for a while never fails a job: ``duron.Worker`` on
SQLite faults that pass (a database locked beyond its busy timeout, a read-only
file, a full disk) and on a store that refuses every poll for a while.

The PostgreSQL server going away (restarts, a stop, two worker processes) is in
test_postgres_outage.py.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio
import pytest

import duron
from duron.contrib.storage import SQLiteStore

pytestmark = pytest.mark.both_hosts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


ran: list[str] = []
release = anyio.Event()


@duron.effect
async def step(i: int) -> int:
    ran.append(f"step {i}")
    return i * 10


@duron.effect
async def wait_for_release(i: int) -> str:
    """Its result (10 kB) needs new pages in the database file."""
    ran.append(f"start {i}")
    await release.wait()
    ran.append(f"wait {i}")
    return str(i) * 10_000


@duron.durable
async def step_then_wait(ctx: duron.Context, i: int) -> int:
    return await ctx.run(step, i) + len(await ctx.run(wait_for_release, i))


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    global release
    ran.clear()
    release = anyio.Event()


# -- SQLite faults ---------------------------------------------------------------------------


class Fault:
    """A SQLite store's file made unusable for a while, by hand."""

    detail: str

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def apply(self) -> None: ...

    async def lift(self) -> None: ...

    async def pragma(self, statement: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(statement)

        await self.store._engine.call(run, op="test", write=False)


class Locked(Fault):
    """Another process holds the write lock longer than the busy timeout."""

    detail = "database is locked"

    async def apply(self) -> None:
        self.db = sqlite3.connect(self.store.path, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    async def lift(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


class ReadOnly(Fault):
    """The database cannot be written (as a file made read-only would; as root,
    file permissions would not stop the test, so SQLite is told instead)."""

    detail = "attempt to write a readonly database"

    async def apply(self) -> None:
        await self.pragma("PRAGMA query_only = 1")

    async def lift(self) -> None:
        await self.pragma("PRAGMA query_only = 0")


class Full(Fault):
    """No room for one more page (as on a full disk, except that the writes that
    fit in the pages already there still go in: a claim does, the 10 kB result does
    not, so a job may be claimed and stopped more than once)."""

    detail = "database or disk is full"

    async def apply(self) -> None:
        await self.pragma("PRAGMA max_page_count = 1")  # as small as it gets

    async def lift(self) -> None:
        await self.pragma("PRAGMA max_page_count = 1073741823")


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [Locked, ReadOnly, Full])
async def test_a_storage_fault_stops_the_job_without_failing_it_and_it_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: type[Fault]
) -> None:
    # A long lease: no renewal write gets in the way; a short busy timeout.
    store = SQLiteStore(tmp_path / "jobs.db", lease=60, busy_timeout=0.2)
    await store.submit(step_then_wait.options(job_id="j"), 1)
    caplog.set_level(logging.INFO, logger="duron")
    f = fault(store)
    async with duron.Worker(
        store, [step_then_wait], poll_interval=0.05, heartbeat_interval=0.05
    ) as w:
        await until(lambda: ran == ["step 1", "start 1"])
        await f.apply()
        release.set()  # the effect ends; its result cannot be written
        await until(lambda: w.interrupted >= 1)
        info = await store.get("j")  # reading still works
        assert (info.status, info.error) in (("running", None), ("pending", None))
        await anyio.sleep(0.3)  # polls fail meanwhile, and back off
        await f.lift()
        assert await store.result("j") == 10_010
    stops = w.interrupted
    # The step's result was committed: replayed, not run again. The effect that
    # finished during the fault ran again (its result was never recorded).
    assert ran == ["step 1"] + ["start 1", "wait 1"] * (stops + 1)
    assert w.ended == 1
    assert stops == 1 or fault is Full
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    expected = (
        f"duron: SQLite store {store.path} is unavailable (append of job j failed: "
        f"{f.detail}); retrying with backoff, jobs stop at a safe point and resume "
        "from their logs once it is back"
    )
    # One per outage: a full disk that still takes small writes comes and goes
    # with each claim; a locked or read-only one is one outage.
    assert warnings == [expected] * (stops if fault is Full else 1)
    assert all(r.exc_info is None for r in caplog.records)
    messages = [r.getMessage() for r in caplog.records]
    back = [m for m in messages if "reachable again" in m]
    assert len(back) == len(warnings)
    assert all(re.fullmatch(r".* is reachable again after \d+\.\d s", m) for m in back)
    entries = [raw async for _, raw in store.read_log("j")]
    assert len(entries) == 4  # job, step done, wait done, end: nothing of the stops
    await store.close()


# -- a store that cannot be reached for a while ----------------------------------------------


class Flaky(SQLiteStore):
    """A store whose polls fail while ``down`` (the worker's view of a database
    that went away)."""

    down = False
    polls = 0

    def _unavailable(self, op: str) -> duron.StoreUnavailableError:
        self.polls += 1
        return duron.StoreUnavailableError(
            kind="store", store="flaky", operation=op, detail="down for the test"
        )

    async def claim(
        self,
        limit: int,
        *,
        functions: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
    ) -> list[duron.Claim]:
        if self.down:
            raise self._unavailable("claim")
        return await super().claim(limit, functions=functions, queues=queues)

    async def heartbeat(self, job_ids: Iterable[str]) -> duron.Heartbeat:
        if self.down:
            raise self._unavailable("heartbeat")
        return await super().heartbeat(job_ids)


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[Flaky]:
    store = Flaky(tmp_path / "jobs.db")
    yield store
    await store.close()


@pytest.mark.anyio
async def test_polls_of_an_unreachable_store_back_off_and_are_logged_once(
    flaky: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="duron")
    await flaky.submit(step_then_wait.options(job_id="later"), 2)
    flaky.down = True
    async with duron.Worker(
        flaky, [step_then_wait], poll_interval=0.01, heartbeat_interval=0.01
    ) as w:
        await anyio.sleep(1.5)
        # Every 10 ms without backoff (about 150 polls); backing off from 0.1 s
        # (with jitter), a handful.
        assert 2 <= flaky.polls <= 8, flaky.polls
        assert w.running == []
        flaky.down = False
        release.set()
        assert await flaky.result("later") == 10_020
    records = [r for r in caplog.records if r.name == "duron"]
    assert [(r.levelname, r.getMessage()) for r in records][:1] == [
        (
            "WARNING",
            "duron: SQLite store "
            f"{flaky.path} is unavailable (claim failed: down for the test); "
            "retrying with backoff, jobs stop at a safe point and resume from their "
            "logs once it is back",
        )
    ]
    assert re.fullmatch(
        rf"duron: SQLite store {re.escape(flaky.path)} is reachable again after "
        r"\d+\.\d s",
        records[1].getMessage(),
    )
    assert len(records) == 2
    assert all(r.exc_info is None for r in records)


@pytest.mark.anyio
async def test_a_job_stopped_by_an_outage_is_not_counted_as_ended_or_failed(
    tmp_path: Path,
) -> None:
    """A run stopped by the store is neither an end nor a failure: the worker
    never asks the store to record one (``store.fail``), and counts the job as
    ended once, when it really ends."""

    class Down(SQLiteStore):
        fail_calls = 0

        async def fail(self, job_id: str, epoch: int, error: BaseException) -> None:
            self.fail_calls += 1
            await super().fail(job_id, epoch, error)

    store = Down(tmp_path / "jobs.db", lease=60, busy_timeout=0.2)
    await store.submit(step_then_wait.options(job_id="k"), 3)
    fault = Locked(store)
    async with duron.Worker(
        store, [step_then_wait], poll_interval=0.05, heartbeat_interval=0.05
    ) as w:
        await until(lambda: ran == ["step 3", "start 3"])
        await fault.apply()
        release.set()
        await until(lambda: w.interrupted == 1)
        assert (w.ended, store.fail_calls) == (0, 0)
        await fault.lift()
        assert await store.result("k") == 10_030
    assert (w.ended, store.fail_calls) == (1, 0)
    await store.close()
