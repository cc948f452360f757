"""``job.close()`` from any task: it stops the run, waits for it, releases the log;
the task that entered ``async with`` leaves the job's task group. On asyncio and
trio (the host's task groups are what this is about)."""

from __future__ import annotations

import anyio
import pytest

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

started: list[str] = []
stopped: list[str] = []


@duron.effect
async def wait_forever(tag: str) -> str:
    started.append(tag)
    try:
        await anyio.sleep_forever()
    finally:
        stopped.append(tag)
    raise AssertionError("unreachable")


@duron.durable
async def stuck(ctx: duron.Context) -> str:
    return await ctx.run(wait_forever, "a")


async def test_close_from_another_task_stops_the_job_and_releases_the_log() -> None:
    started.clear()
    stopped.clear()
    storage = MemoryLogStorage()
    async with stuck.invoke(storage) as job, anyio.create_task_group() as tg:
        await job.start()
        with anyio.fail_after(5):
            while not started:
                await anyio.sleep(0.001)
        closed = anyio.Event()

        async def closer() -> None:
            await job.close()
            closed.set()

        tg.start_soon(closer)
        with anyio.fail_after(5):
            await closed.wait()
        assert job.state == "closed"
        assert stopped == ["a"]
        # The log is free again: another job may take it while this block runs.
        async with stuck.invoke(storage) as other:
            assert other.state == "open"
        with pytest.raises(
            duron.UsageError,
            match="was closed before it finished; resume\\(\\) it later",
        ):
            await job.wait()
    assert job.state == "closed"
    # Nothing but the job entry (and the effect's start, if it was flushed) is
    # recorded: the effect never finished.
    assert "done" not in [e.type for e in storage.entries()]


async def test_close_from_two_tasks_at_once_is_one_close() -> None:
    started.clear()
    stopped.clear()
    storage = MemoryLogStorage()
    async with stuck.invoke(storage) as job:
        await job.start()
        with anyio.fail_after(5):
            while not started:
                await anyio.sleep(0.001)
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.close)
            tg.start_soon(job.close)
        assert stopped == ["a"]
        assert job.state == "closed"
    assert job.state == "closed"


async def test_close_from_another_task_before_start() -> None:
    storage = MemoryLogStorage()
    async with stuck.invoke(storage) as job:
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.close)
        assert job.state == "closed"
        with pytest.raises(
            duron.UsageError, match="is closed: start\\(\\)/resume\\(\\)"
        ):
            await job.start()
