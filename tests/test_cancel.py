"""``job.cancel()``: recorded, then delivered as cancellation at the durable code's next
await; replay delivers it at the same point and reaches the same end."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import anyio
import pytest
from support import Host, run_hosted

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


effect_calls: list[str] = []
CANCELLED = re.escape("job <memory> was cancelled")


@pytest.fixture(autouse=True)
def _clear() -> None:
    effect_calls.clear()


async def no_host(job: duron.Job[..., Any]) -> None:
    pass


def cancel_on(event: str) -> Host:
    """A host that cancels the job when the durable code reports ``event``."""

    async def host(job: duron.Job[..., Any]) -> None:
        async for got in await job.open_stream("events", "r"):
            if got == event:
                await job.cancel()

    return host


def entry_types(storage: MemoryLogStorage) -> list[str]:
    return [e.type for e in storage.entries()]


@duron.effect
async def long_call() -> str:
    effect_calls.append("long_call started")
    try:
        await anyio.sleep(3600)
    except anyio.get_cancelled_exc_class():
        effect_calls.append("long_call cancelled")
        raise
    return "finished"


@duron.effect
async def cleanup(what: str) -> str:
    effect_calls.append(f"cleanup {what}")
    return f"cleaned {what}"


@duron.durable
async def cancellable(
    ctx: duron.Context, events: duron.StreamWriter[str] = duron.Provided
) -> str:
    call = asyncio.ensure_future(ctx.run(long_call))
    await events.send("calling")
    return await call


async def test_cancel_reaches_durable_code_at_its_next_await() -> None:
    storage = MemoryLogStorage()
    with pytest.raises(duron.JobCancelledError, match=f"^{CANCELLED}$"):
        await run_hosted(cancellable, storage, cancel_on("calling"))
    # The effect the code was waiting on is cancelled with it.
    assert effect_calls == ["long_call started", "long_call cancelled"]
    types = entry_types(storage)
    assert types[-2:] == ["cancel", "end"]
    end = storage.entries()[-1].to_json()
    assert end["error"] == {
        "type": "duron._errors.JobCancelledError",
        "message": "job <memory> was cancelled",
        "args": ["job <memory> was cancelled"],
    }
    log = storage.raw
    with pytest.raises(duron.JobCancelledError, match=f"^{CANCELLED}$"):
        await run_hosted(cancellable, storage, no_host)
    assert effect_calls == ["long_call started", "long_call cancelled"]
    assert storage.raw == log


@duron.durable
async def tidy(
    ctx: duron.Context, events: duron.StreamWriter[str] = duron.Provided
) -> str:
    _, never = await ctx.create_future(str, name="never answered")
    await events.send("waiting")
    try:
        await never
    except asyncio.CancelledError:
        # Catching the cancellation is allowed: the code may tidy up and end normally.
        return await ctx.run(cleanup, "after cancel")
    return "answered"


async def test_durable_code_that_catches_the_cancel_ends_normally() -> None:
    storage = MemoryLogStorage()
    assert (
        await run_hosted(tidy, storage, cancel_on("waiting")) == "cleaned after cancel"
    )
    assert effect_calls == ["cleanup after cancel"]
    assert entry_types(storage)[-1] == "end"
    assert "cancel" in entry_types(storage)
    log = storage.raw
    assert await run_hosted(tidy, storage, no_host) == "cleaned after cancel"
    assert effect_calls == ["cleanup after cancel"]
    assert storage.raw == log


@duron.durable
async def stubborn(
    ctx: duron.Context, events: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    seen: list[str] = []
    for round_ in ("first", "second"):
        _, never = await ctx.create_future(str, name=f"{round_} wait")
        await events.send(round_)
        try:
            await never
        except asyncio.CancelledError:
            seen.append(f"{round_} cancel caught at {await ctx.time()}")
    await events.send("third")
    await asyncio.sleep(3600)  # the third cancel ends the job here
    return seen


async def test_each_cancel_is_delivered_at_its_own_point() -> None:
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        async for event in await job.open_stream("events", "r"):
            await job.cancel()
            assert event in ("first", "second", "third")

    with pytest.raises(duron.JobCancelledError, match=f"^{CANCELLED}$"):
        await run_hosted(stubborn, storage, host)
    assert entry_types(storage).count("cancel") == 3
    log = storage.raw
    with anyio.fail_after(5):  # the hour-long sleep is cancelled on replay too
        with pytest.raises(duron.JobCancelledError, match=f"^{CANCELLED}$"):
            await run_hosted(stubborn, storage, no_host)
    assert storage.raw == log


async def test_cancel_a_resumed_job_waits_for_replay_then_records_it() -> None:
    storage = MemoryLogStorage()
    async with tidy.invoke(storage) as job:
        await job.start()
        assert await (await job.open_stream("events", "r")).__anext__() == "waiting"
    async with tidy.invoke(storage) as job:
        await job.resume()
        await job.cancel()
        assert await job.wait() == "cleaned after cancel"
    assert await run_hosted(tidy, storage, no_host) == "cleaned after cancel"
    assert effect_calls == ["cleanup after cancel"]


async def test_cancel_misuse() -> None:
    storage = MemoryLogStorage()
    async with tidy.invoke(storage) as job:
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "job <memory>: cancel needs a started job: call start() or resume() "
                "first"
            ),
        ):
            await job.cancel()
        await job.start()
        await job.cancel()
        assert await job.wait() == "cleaned after cancel"
        log = storage.raw
        with pytest.raises(
            duron.UsageError,
            match=re.escape("job <memory> has ended; it takes no more input"),
        ):
            await job.cancel()
    assert storage.raw == log
