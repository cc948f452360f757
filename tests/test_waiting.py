"""``job.waiting()``: when a job waits only on durable things, and for what.

A worker suspends such a job (gives its slot back); so the answer must be ``None``
whenever stopping the job would cut something live: an effect running, an outcome
not yet written, durable code still to run, or replay still under way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

gate: list[anyio.Event] = []
future_ids: list[str] = []


@duron.effect
async def blocked() -> int:
    await gate[0].wait()
    return 1


@duron.durable
async def sleeps_after_an_effect(ctx: duron.Context, delay: float) -> str:
    await ctx.run(blocked)
    await asyncio.sleep(delay)
    return "woke"


@duron.durable
async def waits_for_a_future(ctx: duron.Context) -> int:
    future_id, result = await ctx.create_future(int)
    future_ids.append(future_id)
    return await result


async def quiet(job: duron.Job[..., Any]) -> duron.Waiting:
    with anyio.fail_after(5):
        while (waiting := job.waiting()) is None:
            await anyio.sleep(0.01)
    return waiting


async def test_a_job_is_not_waiting_while_an_effect_runs() -> None:
    gate[:] = [anyio.Event()]
    async with sleeps_after_an_effect.invoke(MemoryLogStorage()) as job:
        assert job.waiting() is None  # not started
        await job.start(3600.0)
        await anyio.sleep(0.2)  # long enough to be quiet, were it not running
        assert job.waiting() is None
        before = time.time()
        gate[0].set()
        waiting = await quiet(job)
        assert waiting.until is not None
        assert before + 3600 <= waiting.until <= time.time() + 3600
        assert waiting.since <= anyio.current_time()
        assert job.waiting() == waiting  # the same wait, still
        await job.close()
        assert job.waiting() is None


async def test_a_job_waiting_for_input_alone_has_no_timer() -> None:
    future_ids.clear()
    async with waits_for_a_future.invoke(MemoryLogStorage()) as job:
        await job.start()
        waiting = await quiet(job)
        assert waiting.until is None
        await job.complete_future(future_ids[0], result=7)
        assert await job.wait() == 7
        assert job.waiting() is None  # ended


async def test_a_resumed_job_is_waiting_again_once_replay_is_over() -> None:
    future_ids.clear()
    storage = MemoryLogStorage()
    async with waits_for_a_future.invoke(storage) as job:
        await job.start()
        await quiet(job)
    async with waits_for_a_future.invoke(storage) as job:
        await job.resume()
        assert (await quiet(job)).until is None
        await job.complete_future(future_ids[0], result=8)
        assert await job.wait() == 8


async def test_suspend_stops_only_a_job_that_waits_on_durable_things() -> None:
    gate[:] = [anyio.Event()]
    storage = MemoryLogStorage()
    async with sleeps_after_an_effect.invoke(storage) as job:
        await job.start(3600.0)
        await anyio.sleep(0.1)
        assert job.suspend() is None  # its effect runs: nothing done
        gate[0].set()
        waiting = await quiet(job)
        assert job.suspend() == waiting
        await job.close()
    types = [e.type for e in storage.entries()]
    assert types == ["job", "start", "done"]  # no end: it stopped, not finished
    # Resumed, it replays and waits for the same timer again.
    async with sleeps_after_an_effect.invoke(storage) as job:
        await job.resume()
        assert (await quiet(job)).until == waiting.until


async def test_wait_idle_returns_when_the_job_waits_only_on_durable_things() -> None:
    gate[:] = [anyio.Event()]
    async with sleeps_after_an_effect.invoke(MemoryLogStorage()) as job:
        with pytest.raises(
            duron.UsageError,
            match=r"wait_idle\(\) needs a started job: call start\(\) or resume\(\) "
            "first$",
        ):
            await job.wait_idle()
        await job.start(0.2)
        async with anyio.create_task_group() as tg:
            seen: list[duron.Waiting | None] = []

            async def watch() -> None:
                seen.append(await job.wait_idle())

            tg.start_soon(watch)
            await anyio.sleep(0.1)
            assert seen == []  # its effect runs
            gate[0].set()
        assert seen[0] is not None
        assert seen[0].until is not None
        # Its timer fires and the job ends: no more waiting.
        assert await job.wait() == "woke"
        assert await job.wait_idle() is None
