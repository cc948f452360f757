"""What a worker says on the ``duron.worker`` logger: one INFO line per step of a
job's life (claimed, resuming, completed, failed, cancelled, stopped, lease lost),
each naming the job, its function and its lease epoch, and carrying them as the
record's ``job_id``, ``function`` and ``epoch``; nothing per effect. On every SQL
store (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron

if TYPE_CHECKING:
    from collections.abc import Callable

    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio

held: list[anyio.Event] = []


@duron.effect
async def step(i: int) -> int:
    return i


@duron.effect
async def hold(i: int) -> int:
    started = anyio.Event()
    held.append(started)
    await anyio.sleep_forever()
    return i


@duron.durable
async def steps(ctx: duron.Context, n: int) -> int:
    return sum([await ctx.run(step, i) for i in range(n)])


@duron.durable
async def holds(ctx: duron.Context, n: int) -> int:
    await ctx.run(step, n)
    return await ctx.run(hold, n)


@duron.durable
async def broken(ctx: duron.Context, n: int) -> int:
    await ctx.run(step, n)
    raise ValueError(f"order {n} is broken")


@duron.durable
async def cancellable(ctx: duron.Context, n: int) -> int:
    try:
        return await ctx.run(hold, n)
    except asyncio.CancelledError:
        raise


@duron.durable
async def approval(ctx: duron.Context, n: int) -> str:
    _, decision = await ctx.create_future(str, name="approve")
    await ctx.run(step, n)
    return await decision


@pytest.fixture
async def store(backend: Backend) -> Store:
    held.clear()
    return await backend.store(lease=5)


def worker(store: Store, *fns: duron.DurableFn[..., Any]) -> duron.Worker:
    return duron.Worker(store, fns, poll_interval=0.05, heartbeat_interval=0.05)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "duron.worker"
    ]


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="duron")
    return caplog


async def test_a_job_that_completes_claimed_then_completed(
    store: Store, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(steps.options(job_id="s"), 3)
    async with worker(store, steps):
        assert await store.result("s") == 3
    assert lines(caplog_info) == [
        ("INFO", "duron worker: claimed job s (steps, epoch 1)"),
        ("INFO", "duron worker: job s (steps, epoch 1) completed"),
    ]
    # Every line carries the job as data, for handlers that format records so.
    fields = [
        (r.__dict__["job_id"], r.__dict__["function"], r.__dict__["epoch"])
        for r in caplog_info.records
        if r.name == "duron.worker"
    ]
    assert fields == [("s", "steps", 1)] * 2


async def test_a_job_whose_code_raises_failed_with_its_error(
    store: Store, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(broken.options(job_id="b"), 7)
    async with worker(store, broken):
        with pytest.raises(ValueError, match=r"^order 7 is broken$"):
            await store.result("b")
    assert lines(caplog_info) == [
        ("INFO", "duron worker: claimed job b (broken, epoch 1)"),
        (
            "INFO",
            "duron worker: job b (broken, epoch 1) failed: ValueError: order 7 is broken",
        ),
    ]


async def test_a_cancelled_job_cancelled(
    store: Store, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(cancellable.options(job_id="c"), 1)
    async with worker(store, cancellable):
        await until(lambda: len(held) == 1)
        await store.cancel("c")
        with pytest.raises(duron.JobCancelledError):
            await store.result("c")
    assert lines(caplog_info) == [
        ("INFO", "duron worker: claimed job c (cancellable, epoch 1)"),
        ("INFO", "duron worker: job c (cancellable, epoch 1) cancelled"),
    ]


async def test_a_stopped_job_is_resumed_by_the_next_worker(
    store: Store, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(holds.options(job_id="h"), 2)
    async with worker(store, holds):
        await until(lambda: len(held) == 1)
    async with worker(store, holds):
        await until(lambda: len(held) == 2)
    assert lines(caplog_info) == [
        ("INFO", "duron worker: claimed job h (holds, epoch 1)"),
        (
            "INFO",
            "duron worker: stopped job h (holds, epoch 1) at a safe point (the "
            "worker is stopping); it resumes from its log when a worker claims it",
        ),
        ("INFO", "duron worker: claimed job h (holds, epoch 2)"),
        ("INFO", "duron worker: resuming job h (holds, epoch 2) from its log"),
        (
            "INFO",
            "duron worker: stopped job h (holds, epoch 2) at a safe point (the "
            "worker is stopping); it resumes from its log when a worker claims it",
        ),
    ]


async def test_a_lost_lease_is_said_once(
    store: Store, backend: Backend, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(holds.options(job_id="h"), 1)
    async with worker(store, holds) as w:
        await until(lambda: len(held) == 1)
        backend.take_over("h")
        await until(lambda: w.running == [])
    assert lines(caplog_info) == [
        ("INFO", "duron worker: claimed job h (holds, epoch 1)"),
        (
            "INFO",
            "duron worker: lost the lease on job h (holds, epoch 1) (another owner "
            "took it over); stopping it here without writing",
        ),
    ]


async def test_nothing_is_said_at_info_while_no_job_changes(
    store: Store, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(steps.options(job_id="other"), 1)  # not this worker's
    async with worker(store, holds):
        await anyio.sleep(0.3)  # six polls
    assert lines(caplog_info) == []


async def test_a_suspended_job_says_so_and_what_wakes_it(
    store: Store, caplog_info: pytest.LogCaptureFixture
) -> None:
    await store.submit(approval.options(job_id="a"), 1)
    w = duron.Worker(
        store,
        [approval],
        poll_interval=0.05,
        heartbeat_interval=0.05,
        suspend_after=0.1,
    )
    async with w:

        async def suspended() -> bool:
            return (await store.get("a")).status == "suspended"

        with anyio.fail_after(10):
            while not await suspended():
                await anyio.sleep(0.02)
        assert w.running == []
    assert lines(caplog_info) == [
        ("INFO", "duron worker: claimed job a (approval, epoch 1)"),
        (
            "INFO",
            "duron worker: job a (approval, epoch 1) suspended, waiting for input",
        ),
    ]
