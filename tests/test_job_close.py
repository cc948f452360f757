"""``job.close()`` from any task: it stops the run, waits for it, releases the log;
the task that entered ``async with`` leaves the job's task group. On asyncio and
trio (the host's task groups are what this is about)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
from support import run_job

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


# -- close() racing start(), inside a cancel scope, with host input in flight ------------

ran: list[str] = []


@duron.effect
async def first() -> int:
    return 1


@duron.effect
async def second() -> int:
    ran.append("second")
    return 2


@duron.durable
async def two_steps(ctx: duron.Context) -> int:
    return await ctx.run(first) + await ctx.run(second)


class SlowRead(MemoryLogStorage):
    """Reading takes a while (a file read in a thread, a database query)."""

    async def read(self) -> AsyncIterator[tuple[int, bytes]]:
        await anyio.sleep(0.05)
        async for item in super().read():
            yield item


async def test_close_while_resume_reads_the_log_runs_nothing_after_it() -> None:
    whole = MemoryLogStorage()
    await run_job(two_steps, whole)
    storage = SlowRead(whole.raw[:2])  # the job entry and first()'s end
    ran.clear()
    async with two_steps.invoke(storage) as job, anyio.create_task_group() as tg:

        async def closer() -> None:
            await anyio.sleep(0.01)  # resume() is reading the log
            await job.close()

        tg.start_soon(closer)
        await job.resume()
        await anyio.sleep(0.1)
        assert job.state == "closed"
        # After close() returned, nothing ran and nothing was written: another
        # writer may take the log.
        assert ran == []
        assert len(storage.raw) == 2
        await storage.acquire()
        await storage.release()


async def test_close_from_the_owner_inside_a_cancel_scope() -> None:
    started.clear()
    async with stuck.invoke(MemoryLogStorage()) as job:
        await job.start()
        with anyio.fail_after(5):  # a shutdown deadline around it
            await job.close()
        assert job.state == "closed"
    assert job.state == "closed"


@duron.durable
async def first_value(
    ctx: duron.Context, values: duron.Stream[int] = duron.Provided
) -> int:
    async for value in values:
        return value
    return -1


class SlowAppend(MemoryLogStorage):
    """A write whose acknowledgement takes a while (SQLite, PostgreSQL)."""

    async def append(self, entries: Sequence[bytes], /) -> None:
        await anyio.sleep(0.2)
        await super().append(entries)


async def test_host_input_being_written_when_the_job_closes_is_acknowledged() -> None:
    storage = SlowAppend()
    sent: list[str] = []
    async with first_value.invoke(storage) as job:
        await job.start()
        writer = await job.open_stream("values", "w")
        async with anyio.create_task_group() as tg:

            async def send() -> None:
                with anyio.fail_after(5):
                    await writer.send(7)
                sent.append("sent")

            async def close() -> None:
                await anyio.sleep(0.1)  # the value's write is under way
                await job.close()

            tg.start_soon(send)
            tg.start_soon(close)
    # The write was finished, not cut: the value is in the log and send() says so.
    assert sent == ["sent"]
    assert "emit" in [e.type for e in storage.entries()]
