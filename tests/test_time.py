"""Time and randomness in durable code: recorded clocks, durable timers, seeded RNGs.

Long sleeps are tested without waiting for them: the host clock given to the job
(``fn.invoke(storage, clock=...)``) is shifted forward between runs, as if the machine
had been down for a while, and only the short remainder is really waited for.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest
from support import run_job

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = pytest.mark.anyio

marks: list[str] = []
reached: list[anyio.Event] = []


@duron.effect
async def mark(what: str) -> str:
    marks.append(what)
    return what


class HostClock:
    """The host clock as the job driver sees it: real time plus a shift."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


@pytest.fixture
def host_clock() -> HostClock:
    return HostClock()


# -- deterministic clock and randomness -------------------------------------------------


@duron.durable
async def clocks_flow(ctx: duron.Context) -> dict[str, Any]:
    t0 = await ctx.time()
    ns0 = await ctx.time_ns()
    rng = ctx.random()
    draws = [rng.random(), rng.randint(0, 10**9)]
    await ctx.run(mark, "step")
    t1 = await ctx.time()
    second = ctx.random().random()
    return {"t0": t0, "ns0": ns0, "t1": t1, "draws": draws, "second": second}


async def test_time_and_random_replay_the_same_values() -> None:
    marks.clear()
    storage = MemoryLogStorage()
    first = await run_job(clocks_flow, storage)
    second = await run_job(clocks_flow, storage)
    assert first == second
    assert marks == ["step"]
    entries = storage.entries()
    assert first["t0"] == entries[0].t  # the job's clock starts at its logged start
    assert first["ns0"] == int(first["t0"] * 1e9)
    done = next(e for e in entries if e.type == "done")
    assert first["t1"] == done.t  # after an effect: the time its result was logged
    assert first["t1"] >= first["t0"]
    assert first["draws"][0] != first["second"]  # each call gets its own seed


async def test_random_differs_between_jobs() -> None:
    a = await run_job(clocks_flow, MemoryLogStorage())
    b = await run_job(clocks_flow, MemoryLogStorage())
    assert a["draws"] != b["draws"]


async def test_ctx_time_follows_the_host_clock_live(host_clock: HostClock) -> None:
    host_clock.shift = 1000.0
    storage = MemoryLogStorage()
    before = time.time() + 1000.0
    result = await run_job(clocks_flow, storage, clock=host_clock)
    assert result["t0"] >= before  # the job entry's time comes from it too
    assert result["t1"] >= before
    assert await run_job(clocks_flow, storage) == result


# -- durable timers ----------------------------------------------------------------------


@duron.durable
async def nap_flow(ctx: duron.Context, seconds: float) -> list[float]:
    await ctx.run(mark, "before")
    start = await ctx.time()
    if reached:
        reached[0].set()  # the "before" result is logged: the host may stop the job
    await asyncio.sleep(seconds)
    end = await ctx.time()
    await ctx.run(mark, "after")
    return [start, end]


async def _stop_during_nap(storage: MemoryLogStorage, seconds: float) -> None:
    reached[:] = [anyio.Event()]
    try:
        async with nap_flow.invoke(storage) as job:
            await job.start(seconds)
            with anyio.fail_after(5):
                await reached[0].wait()
    finally:
        reached.clear()
    assert [e.type for e in storage.entries()] == ["job", "done"]


async def test_a_job_stopped_during_a_sleep_waits_only_what_is_left(
    host_clock: HostClock,
) -> None:
    marks.clear()
    storage = MemoryLogStorage()
    await _stop_during_nap(storage, 60.0)
    slept_from = storage.entries()[1].t

    host_clock.shift = 59.9  # the job is resumed 59.9 s later: 0.1 s is left
    began = time.monotonic()
    with anyio.fail_after(10):
        start, end = await run_job(nap_flow, storage, 60.0, clock=host_clock)
    waited = time.monotonic() - began
    assert 0.05 < waited < 5, f"waited {waited:.3f}s for the 0.1s left of the sleep"
    assert start == slept_from
    assert end == pytest.approx(slept_from + 60.0, abs=1e-6)
    assert marks == ["before", "after"]

    began = time.monotonic()
    assert await run_job(nap_flow, storage, 60.0) == [start, end]
    assert time.monotonic() - began < 1, "replay waited for a recorded sleep"
    assert marks == ["before", "after"]


async def test_a_sleep_that_ended_while_the_job_was_down_fires_at_once(
    host_clock: HostClock,
) -> None:
    marks.clear()
    storage = MemoryLogStorage()
    await _stop_during_nap(storage, 60.0)
    slept_from = storage.entries()[1].t

    host_clock.shift = 3600.0  # resumed an hour later
    with anyio.fail_after(5):
        _, end = await run_job(nap_flow, storage, 60.0, clock=host_clock)
    # Durable code wakes at the sleep's deadline, not at the time it was resumed...
    assert end == pytest.approx(slept_from + 60.0, abs=1e-6)
    # ... and what it does next happens now.
    after = next(e for e in storage.entries() if e.type == "done" and e.id == 1)
    assert after.t >= slept_from + 3600.0
    assert marks == ["before", "after"]


# -- anyio.sleep and wait_for in durable code ------------------------------------------

slow_runs: list[str] = []


@duron.effect
async def slow(name: str) -> str:
    slow_runs.append(name)
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@duron.durable
async def timeouts_flow(ctx: duron.Context) -> list[Any]:
    out: list[Any] = []
    try:
        await asyncio.wait_for(ctx.run(slow, "stuck"), timeout=0.02)
    except asyncio.TimeoutError:
        out.append(["timed out", await ctx.time()])
    out.append(await asyncio.wait_for(ctx.run(mark, "quick"), timeout=30))
    t = await ctx.time()
    await anyio.sleep(0.02)
    out.append(["anyio slept", await ctx.time() - t > 0.0199])
    with anyio.move_on_after(0.02) as scope:
        await ctx.run(slow, "cancelled by anyio")
    out.append(["moved on", scope.cancelled_caught])
    out.append(await ctx.run(mark, "last"))
    return out


async def test_wait_for_and_anyio_timers_work_and_replay() -> None:
    marks.clear()
    slow_runs.clear()
    storage = MemoryLogStorage()
    with anyio.fail_after(10):
        first = await run_job(timeouts_flow, storage)
    t0 = storage.entries()[0].t
    assert first[0] == ["timed out", pytest.approx(t0 + 0.02, abs=1e-6)]
    assert first[1:] == ["quick", ["anyio slept", True], ["moved on", True], "last"]
    assert marks == ["quick", "last"]
    assert slow_runs == ["stuck", "cancelled by anyio"]
    with anyio.fail_after(10):
        assert await run_job(timeouts_flow, storage) == first
    assert marks == ["quick", "last"]
    assert slow_runs == ["stuck", "cancelled by anyio"]
