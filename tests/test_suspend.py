"""Suspension: a job waiting only on durable things gives its worker slot back.

The worker stops it at that safe point and releases it as ``suspended``; the store
makes it runnable again when its timer is due, when input or a cancel request
arrives for it; a worker claims it, replays, and goes on.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron

if TYPE_CHECKING:
    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio

runs: list[str] = []


@duron.effect
async def note(what: str) -> str:
    runs.append(what)
    return what


@duron.effect
async def slow_note(what: str) -> str:
    await anyio.sleep(0.6)
    runs.append(what)
    return what


@duron.durable
async def approval(ctx: duron.Context, order: int) -> str:
    future_id, decision = await ctx.create_future(str, name=f"approve {order}")
    await ctx.run(note, f"asked {order}: {future_id}")
    return await ctx.run(note, f"{order} {await decision}")


@duron.durable
async def sleeper(ctx: duron.Context, seconds: float) -> str:
    await ctx.run(note, "before")
    await asyncio.sleep(seconds)
    return await ctx.run(note, "after")


@duron.durable
async def busy(ctx: duron.Context) -> str:
    return await ctx.run(slow_note, "slow")


def worker(store: Store, *fns: duron.DurableFn[..., Any], **kw: Any) -> duron.Worker:
    kw.setdefault("suspend_after", 0.1)
    return duron.Worker(store, fns, poll_interval=0.05, heartbeat_interval=0.05, **kw)


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


def future_of(order: int) -> str:
    (line,) = [r for r in runs if r.startswith(f"asked {order}: ")]
    return line.split(": ")[1]


async def test_a_job_waiting_for_input_is_suspended_and_resumed_by_it(
    backend: Backend,
) -> None:
    runs.clear()
    store = await backend.store()
    async with worker(store, approval, concurrency=1) as w:
        ids = [await store.submit(approval, n) for n in (1, 2, 3)]

        async def all_suspended() -> bool:
            return [(await store.get(i)).status for i in ids] == ["suspended"] * 3

        # One slot, three jobs waiting for a person: each gives the slot back.
        await until(all_suspended)
        assert w.running == []
        assert w.suspended == 3
        info = await store.get(ids[1])
        assert info.wake_at is None
        assert str(info).endswith("(waiting for input)")
        await store.complete_future(ids[1], future_of(2), result="yes")
        assert (await store.result(ids[1], approval, timeout=10)) == "2 yes"
        assert (await store.get(ids[0])).status == "suspended"  # still waiting
    assert runs.count("asked 2: " + future_of(2)) == 1  # replay ran nothing again


async def test_a_sleeping_job_is_suspended_until_its_timer(backend: Backend) -> None:
    runs.clear()
    store = await backend.store()
    async with worker(store, sleeper) as w:
        before = time.time()
        job_id = await store.submit(sleeper, 1.0)

        async def suspended() -> bool:
            return (await store.get(job_id)).status == "suspended"

        await until(suspended)
        info = await store.get(job_id)
        assert info.wake_at is not None
        assert before + 1.0 <= info.wake_at.timestamp() <= time.time() + 1.0
        assert w.running == []
        assert await store.result(job_id, sleeper, timeout=10) == "after"
        assert time.time() >= before + 1.0  # not early
    assert runs == ["before", "after"]


async def test_a_timer_that_came_due_while_no_worker_ran_fires_at_once(
    backend: Backend,
) -> None:
    runs.clear()
    store = await backend.store()
    async with worker(store, sleeper):
        job_id = await store.submit(sleeper, 0.5)

        async def suspended() -> bool:
            return (await store.get(job_id)).status == "suspended"

        await until(suspended)
    await anyio.sleep(0.8)  # the timer comes due while nothing runs
    start = time.monotonic()
    async with worker(store, sleeper):
        assert await store.result(job_id, sleeper, timeout=10) == "after"
    assert time.monotonic() - start < 2.0


async def test_a_job_with_an_effect_in_flight_is_never_suspended(
    backend: Backend,
) -> None:
    runs.clear()
    store = await backend.store()
    async with worker(store, busy, suspend_after=0) as w:
        job_id = await store.submit(busy)
        assert await store.result(job_id, busy, timeout=10) == "slow"
        assert w.suspended == 0
    assert runs == ["slow"]


async def test_a_timer_due_sooner_than_suspend_after_is_waited_for_in_place(
    backend: Backend,
) -> None:
    runs.clear()
    store = await backend.store()
    async with worker(store, sleeper, suspend_after=5.0) as w:
        job_id = await store.submit(sleeper, 0.3)
        assert await store.result(job_id, sleeper, timeout=10) == "after"
        assert w.suspended == 0


async def test_cancel_reaches_a_suspended_job(backend: Backend) -> None:
    runs.clear()
    store = await backend.store()
    async with worker(store, approval):
        job_id = await store.submit(approval, 7)

        async def suspended() -> bool:
            return (await store.get(job_id)).status == "suspended"

        await until(suspended)
        assert await store.cancel(job_id)
        with pytest.raises(duron.JobCancelledError):
            await store.result(job_id, timeout=10)
    assert (await store.get(job_id)).status == "cancelled"


async def test_input_stored_before_the_release_keeps_the_job_runnable(
    backend: Backend,
) -> None:
    # The job was found waiting, then input arrived before its lease was given
    # back: it must not sleep through it.
    runs.clear()
    store = await backend.store()
    async with worker(store, approval, suspend_after=None):
        job_id = await store.submit(approval, 9)
        await until(lambda: _true(any(r.startswith("asked 9") for r in runs)))
    log = store.log(job_id)
    await log.acquire()
    log.suspend_until(None)
    await store.complete_future(job_id, future_of(9), result="late")
    await log.release()
    assert (await store.get(job_id)).status == "pending"
    async with worker(store, approval):
        assert await store.result(job_id, approval, timeout=10) == "9 late"


async def test_a_write_after_the_decision_cancels_the_suspension(
    backend: Backend,
) -> None:
    store = await backend.store()
    log = store.log("j")
    await log.acquire()
    log.suspend_until(time.time() + 3600)
    await log.append([b'{"type":"cancel","t":1.0}'])
    await log.release()
    info = await store.get("j")
    assert (info.status, info.wake_at) == ("pending", None)


async def test_suspend_after_is_checked(backend: Backend) -> None:
    store = await backend.store()
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "suspend_after must be a number of seconds >= 0 or None, not -1"
        ),
    ):
        duron.Worker(store, [sleeper], suspend_after=-1)


async def _true(value: bool) -> bool:
    return value


async def test_a_job_woken_by_input_takes_it_before_it_can_be_suspended_again(
    backend: Backend,
) -> None:
    # With suspend_after=0 a resumed job is "quiet" at once; it must not be
    # suspended again before its inbox feed took the input that woke it.
    runs.clear()
    store = await backend.store()
    async with worker(store, approval, suspend_after=0):
        ids = [await store.submit(approval, n) for n in range(10, 15)]

        async def all_suspended() -> bool:
            return [(await store.get(i)).status for i in ids] == ["suspended"] * 5

        await until(all_suspended)
        for n, job_id in zip(range(10, 15), ids, strict=True):
            await store.complete_future(job_id, future_of(n), result="ok")
        for n, job_id in zip(range(10, 15), ids, strict=True):
            assert await store.result(job_id, approval, timeout=10) == f"{n} ok"


async def test_a_cancel_through_the_store_reaches_a_job_run_the_seed_way(
    backend: Backend,
) -> None:
    runs.clear()
    store = await backend.store()
    async with approval.invoke(store.log("seed")) as job:
        await job.start(21)
        await until(lambda: _true(any(r.startswith("asked 21") for r in runs)))
        assert await store.cancel("seed")
        with pytest.raises(duron.JobCancelledError):
            await job.wait()
    info = await store.get("seed")
    assert (info.status, info.cancel_requested) == ("cancelled", False)
    entries = [e async for _, e in store.read_log("seed")]
    assert sum(e.startswith(b'{"type":"cancel"') for e in entries) == 1


@duron.durable
async def waits_for_a_future(ctx: duron.Context) -> str:
    _, value = await ctx.create_future(str, name="f")
    return await value


async def test_a_suspended_job_wakes_for_its_deadline(backend: Backend) -> None:
    store = await backend.store()
    async with worker(store, waits_for_a_future):
        job_id = await store.submit(
            waits_for_a_future.options(job_id="d1", deadline=1.0)
        )

        async def suspended() -> bool:
            return (await store.get(job_id)).status == "suspended"

        await until(suspended)
        assert (await store.get(job_id)).wake_at is not None
        with pytest.raises(duron.JobCancelledError):
            await store.result(job_id, waits_for_a_future, timeout=10)


async def test_input_taken_after_the_decision_to_suspend_wakes_the_job(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The feed fetches an item after job.suspend(), and the run is stopped
    # before it is recorded: the release must not call that item seen.
    store = await backend.store()
    job_id = await store.submit(waits_for_a_future.options(job_id="w1"))
    log = store.log(job_id)
    cls = type(log)
    fetch = cls._inbox_rows
    state: dict[str, Any] = {}

    async def rows(self: Any, after: int, done: list[int], limit: int) -> Any:
        got = await fetch(self, after, done, limit)
        if got and "job" in state:
            state["fetched"] = got
            state["job"]._run_scope.cancel()  # the worker's stop lands now
        return got

    monkeypatch.setattr(cls, "_inbox_rows", rows)
    async with waits_for_a_future.invoke(log) as job:
        await job.resume()
        waiting = await job.wait_idle()
        assert waiting is not None
        assert job.suspend() is not None
        log.suspend_until(waiting.until)
        state["job"] = job
        await store.complete_future(job_id, "0", result="yes")
        with anyio.fail_after(5):
            while "fetched" not in state:
                await anyio.sleep(0.01)
    assert (await store.get(job_id)).status == "pending"
