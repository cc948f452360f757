"""Job deadlines: ``fn.options(deadline=...)`` is recorded in the job entry, and the
job is cancelled through the usual path (a ``cancel`` entry, delivered to durable
code) when it passes: while it runs, or at once when it runs again after passing
while nothing ran it. On a file log and in a SQLite store (with a worker)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron
from duron._entries import JobCancelled, JobStarted
from duron._log import decode_entry
from duron.contrib.storage import FileLogStorage, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

ran: list[str] = []
started = anyio.Event()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    global started
    ran.clear()
    started = anyio.Event()


@duron.effect
async def wait_for_payment(order: int) -> str:
    ran.append(f"waiting {order}")
    started.set()
    await anyio.sleep(3600)
    return "paid"


@duron.durable
async def checkout(ctx: duron.Context, order: int) -> str:
    try:
        return await ctx.run(wait_for_payment, order)
    except asyncio.CancelledError:  # not GeneratorExit: a stopped run's coroutine
        ran.append(f"cancelled {order}")  # may be closed whenever it is collected
        raise


class HostClock:
    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


async def kinds(storage: duron.LogStorage) -> list[Any]:
    return [
        decode_entry(raw, job=storage.label, offset=offset)
        async for offset, raw in storage.read()
    ]


@pytest.fixture(params=["file", "sqlite"])
async def logs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[str], duron.LogStorage]]:
    if request.param == "file":
        yield lambda name: FileLogStorage(tmp_path / f"{name}.jsonl")
        return
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        yield store.log
    finally:
        await store.close()


async def test_a_running_job_is_cancelled_when_its_deadline_passes(
    logs: Callable[[str], duron.LogStorage],
) -> None:
    storage = logs("order-1")
    before = time.time()
    message = f"job {storage.label} was cancelled (its deadline passed)"
    with anyio.fail_after(20):
        async with checkout.options(deadline=0.3).invoke(storage) as job:
            await job.start(1)
            with pytest.raises(
                duron.JobCancelledError, match=f"^{re.escape(message)}$"
            ):
                await job.wait()
    assert ran == ["waiting 1", "cancelled 1"]
    log = await kinds(storage)
    first = log[0]
    assert isinstance(first, JobStarted)
    assert first.deadline is not None
    assert first.deadline == pytest.approx(first.t + 0.3)
    assert before <= first.t
    cancel = next(e for e in log if isinstance(e, JobCancelled))
    assert cancel.t >= first.deadline
    assert [e.type for e in log][-2:] == ["cancel", "end"]
    # Replayed: cancelled at the same point, nothing runs again.
    ran.clear()
    with anyio.fail_after(20):
        async with checkout.invoke(logs("order-1")) as job:
            await job.resume()
            with pytest.raises(
                duron.JobCancelledError, match=f"^{re.escape(message)}$"
            ):
                await job.wait()
    assert ran == ["cancelled 1"]


async def test_a_deadline_that_passed_while_nothing_ran_the_job_cancels_it_at_once(
    logs: Callable[[str], duron.LogStorage],
) -> None:
    clock = HostClock()
    deadline = datetime.now(timezone.utc) + timedelta(hours=1)
    async with checkout.options(deadline=deadline).invoke(
        logs("order-2"), clock=clock
    ) as job:
        await job.start(2)
        with anyio.fail_after(10):
            await started.wait()
        # The job stops with its effect still running: a resume runs it again...
    clock.shift = 2 * 3600.0  # ...but it resumes two hours later.
    ran.clear()
    with anyio.fail_after(20):
        async with checkout.invoke(logs("order-2"), clock=clock) as job:
            await job.resume()
            with pytest.raises(duron.JobCancelledError):
                await job.wait()
    assert ran == ["cancelled 2"]  # cancelled before the effect was started again
    log = await kinds(logs("order-2"))
    assert log[0].deadline == deadline.timestamp()
    assert [e.type for e in log][-2:] == ["cancel", "end"]


async def test_a_job_that_ends_in_time_is_not_cancelled(
    logs: Callable[[str], duron.LogStorage],
) -> None:
    @duron.effect
    async def quick() -> str:
        return "done"

    @duron.durable
    async def flow(ctx: duron.Context) -> str:
        return await ctx.run(quick)

    storage = logs("quick")
    async with flow.options(deadline=timedelta(minutes=5)).invoke(storage) as job:
        await job.start()
        assert await job.wait() == "done"
    assert [e.type for e in await kinds(storage)] == ["job", "done", "end"]


async def test_a_submitted_job_past_its_deadline_is_cancelled_by_the_worker(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        await store.submit(checkout.options(job_id="late", deadline=past), 3)
        await store.submit(checkout.options(job_id="soon", deadline=0.3), 4)
        async with duron.Worker(store, [checkout], poll_interval=0.05):
            with anyio.fail_after(20):
                for job_id in ("late", "soon"):
                    with pytest.raises(
                        duron.JobCancelledError,
                        match=f"^job {job_id} was cancelled \\(its deadline passed\\)$",
                    ):
                        await store.result(job_id)
        assert (await store.get("late")).status == "cancelled"
        assert (await store.get("soon")).status == "cancelled"
        assert "waiting 3" not in ran  # cancelled before its first effect started
        assert "waiting 4" in ran
    finally:
        await store.close()


@pytest.mark.parametrize(
    "bad",
    [datetime(2030, 1, 1), 0, -5, timedelta(0), float("inf"), "tomorrow", True],
    ids=repr,
)
def test_a_bad_deadline_is_refused_naming_the_option(bad: Any) -> None:
    message = (
        f"{checkout.name}.options(deadline=...): deadline must be a timezone-aware "
        f"datetime, or a duration > 0 (a timedelta or seconds), not {bad!r}"
    )
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        checkout.options(deadline=bad)
