"""Signals: ``async with signal:`` blocks interrupted by a value, live and on replay.

Each test's host reacts to what the durable code reports on its ``StreamWriter``
(``"in block ..."``), so the signal arrives while the block waits, deterministically.
Blocks wait on durable futures the host never completes unless a test says so.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from support import Host, run_hosted

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

effect_calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    effect_calls.clear()


async def no_host(job: duron.Job[..., Any]) -> None:
    pass


def react(actions: dict[str, tuple[str, Any]]) -> Host:
    """A host that answers events of the ``events`` stream: event -> (input, value).

    The input ``"future:<event>"`` completes the future whose id the event carries
    after a colon (``"in block:3"``) with the value.
    """

    async def host(job: duron.Job[..., Any]) -> None:
        writers: dict[str, duron.HostWriter[Any]] = {}
        async for event in await job.open_stream("events", "r"):
            text, _, future_id = str(event).partition(":")
            action = actions.get(text)
            if action is None:
                continue
            target, value = action
            if target == "future":
                await job.complete_future(future_id, result=value)
                continue
            if target not in writers:
                writers[target] = await job.open_stream(target, "w")
            await writers[target].send(value)

    return host


async def replay_same(dfn: duron.DurableFn[..., Any], storage: MemoryLogStorage) -> Any:
    """Replay a finished log and check it neither runs nor writes anything."""
    log, calls = storage.raw, list(effect_calls)
    result = await run_hosted(dfn, storage, no_host)
    assert storage.raw == log
    assert effect_calls == calls
    return result


class Stop(BaseModel):
    reason: str
    hard: bool = False


async def wait_in_block(
    ctx: duron.Context, events: duron.StreamWriter[str], label: str
) -> None:
    """Report ``label`` with a fresh future's id, then wait on that future."""
    future_id, never = await ctx.create_future(str, name=label)
    await events.send(f"{label}:{future_id}")
    await never


# -- one block ---------------------------------------------------------------------------


@duron.effect
async def slow_step(i: int) -> int:
    effect_calls.append(f"slow {i}")
    await anyio.sleep(3600)  # only ever ends by being interrupted
    return i


@duron.durable
async def interruptible(
    ctx: duron.Context,
    stop: duron.Signal[Stop] = duron.Provided,
    events: duron.StreamWriter[str] = duron.Provided,
) -> str:
    try:
        async with stop:
            step = asyncio.ensure_future(ctx.run(slow_step, 1))
            await events.send("in block")
            await step
    except duron.SignalInterrupt as interrupt:
        value = interrupt.value
        assert isinstance(value, Stop)  # the value is rebuilt as the annotated type
        return f"interrupted: {value.reason} hard={value.hard}"
    return "finished"


async def test_signal_interrupts_the_block_and_carries_its_value() -> None:
    storage = MemoryLogStorage()
    host = react({"in block": ("stop", Stop(reason="user typed", hard=True))})
    expected = "interrupted: user typed hard=True"
    assert await run_hosted(interruptible, storage, host) == expected
    assert effect_calls == ["slow 1"]  # the interrupted effect ran once, live
    assert await replay_same(interruptible, storage) == expected
    emits = [e.to_json() for e in storage.entries() if e.type == "emit"]
    assert [e["value"] for e in emits] == [{"reason": "user typed", "hard": True}]


async def test_signal_value_failing_validation_writes_nothing() -> None:
    storage = MemoryLogStorage()
    async with interruptible.invoke(storage) as job:
        await job.start()
        stop = await job.open_stream("stop", "w")
        events = await job.open_stream("events", "r")
        assert await events.__anext__() == "in block"
        before = storage.raw
        with pytest.raises(
            duron.PayloadError,
            match=re.escape(
                "value sent to 'stop' (Stop): cannot encode dict: field 'reason' required"
            ),
        ):
            await stop.send({"hard": True})
        with pytest.raises(
            duron.PayloadError,
            match=re.escape(
                "value sent to 'stop' (Stop): cannot encode str: Input should be a valid dictionary or "
                "instance of Stop"
            ),
        ):
            await stop.send("stop!")
        assert storage.raw == before
        await stop.send({"reason": "dict is fine"})
        assert await job.wait() == "interrupted: dict is fine hard=False"
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "'stop' is a signal the durable code reads; the host writes it: "
                "open_stream('stop', 'w')"
            ),
        ):
            await job.open_stream("stop", "r")


# -- nesting -------------------------------------------------------------------------------


@duron.durable
async def nested_same(
    ctx: duron.Context,
    stop: duron.Signal[str] = duron.Provided,
    events: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    seen: list[str] = []
    try:
        async with stop:
            try:
                async with stop:
                    await wait_in_block(ctx, events, "inner")
            except duron.SignalInterrupt as interrupt:
                seen.append(f"inner caught {interrupt.value}")
            await wait_in_block(ctx, events, "outer")
    except duron.SignalInterrupt as interrupt:
        seen.append(f"outer caught {interrupt.value}")
    # The inner interrupt escapes an outer block of the same signal as itself.
    try:
        async with stop, stop:  # two nested blocks
            await wait_in_block(ctx, events, "escaping")
    except duron.SignalInterrupt as interrupt:
        seen.append(f"escaped {interrupt.value}")
    return seen


async def test_same_signal_nested_interrupts_the_innermost_block() -> None:
    storage = MemoryLogStorage()
    host = react(
        {"inner": ("stop", "a"), "outer": ("stop", "b"), "escaping": ("stop", "c")}
    )
    expected = ["inner caught a", "outer caught b", "escaped c"]
    assert await run_hosted(nested_same, storage, host) == expected
    assert await replay_same(nested_same, storage) == expected


@duron.durable
async def nested_different(
    ctx: duron.Context,
    stop: duron.Signal[str] = duron.Provided,
    pause: duron.Signal[int] = duron.Provided,
    events: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    seen: list[str] = []
    for round_ in ("pause", "stop"):
        try:
            async with stop:
                try:
                    async with pause:
                        await wait_in_block(ctx, events, f"{round_} round")
                except duron.SignalInterrupt as interrupt:
                    seen.append(f"pause caught {interrupt.value}")
                await events.send(f"after the inner block of the {round_} round")
        except duron.SignalInterrupt as interrupt:
            seen.append(f"stop caught {interrupt.value}")
    return seen


async def test_different_signals_nested_interrupt_their_own_block() -> None:
    storage = MemoryLogStorage()
    host = react({"pause round": ("pause", 7), "stop round": ("stop", "halt")})
    # The outer signal, sent while the inner block waits, ends the outer block.
    expected = ["pause caught 7", "stop caught halt"]
    assert await run_hosted(nested_different, storage, host) == expected
    assert await replay_same(nested_different, storage) == expected


@duron.durable
async def two_tasks(
    ctx: duron.Context,
    stop: duron.Signal[str] = duron.Provided,
    events: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    async def worker(name: str) -> str:
        try:
            async with stop:
                await wait_in_block(ctx, events, name)
        except duron.SignalInterrupt as interrupt:
            return f"{name} caught {interrupt.value}"
        return f"{name} finished"

    first = asyncio.ensure_future(worker("first"))
    second = asyncio.ensure_future(worker("second"))
    await asyncio.sleep(0)
    await events.send("both waiting")
    return list(await asyncio.gather(first, second))


async def test_one_value_interrupts_a_block_in_every_task() -> None:
    storage = MemoryLogStorage()
    host = react({"both waiting": ("stop", "everyone")})
    expected = ["first caught everyone", "second caught everyone"]
    assert await run_hosted(two_tasks, storage, host) == expected
    assert await replay_same(two_tasks, storage) == expected


# -- a value sent while no block is active ---------------------------------------------


@duron.durable
async def outside_block(
    ctx: duron.Context,
    stop: duron.Signal[str] = duron.Provided,
    inbox: duron.Stream[str] = duron.Provided,
    events: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    seen: list[str] = []
    await events.send("outside")
    seen.append(await inbox.next())  # the host signals, then sends this
    try:
        async with stop:
            future_id, answer = await ctx.create_future(str, name="answer")
            await events.send(f"in block:{future_id}")
            seen.append(await answer)
    except duron.SignalInterrupt as interrupt:
        seen.append(f"interrupted by {interrupt.value}")
    return seen


async def test_signal_outside_any_block_is_dropped() -> None:
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        stop = await job.open_stream("stop", "w")
        inbox = await job.open_stream("inbox", "w")
        async for event in await job.open_stream("events", "r"):
            if event == "outside":
                await stop.send("too early")
                await inbox.send("message")
            elif event.startswith("in block:"):
                await job.complete_future(event.partition(":")[2], result="answered")

    expected = ["message", "answered"]
    assert await run_hosted(outside_block, storage, host) == expected
    # The dropped value is in the log all the same, so replay drops it at that point.
    emitted = [e.to_json()["value"] for e in storage.entries() if e.type == "emit"]
    assert emitted == ["too early", "message"]
    assert await replay_same(outside_block, storage) == expected


# -- signals between durable tasks -----------------------------------------------------------


@duron.effect
async def check(i: int) -> bool:
    effect_calls.append(f"check {i}")
    await anyio.sleep(0.001)
    return i == 3


@duron.durable
async def watchdog(ctx: duron.Context) -> list[str]:
    signal, writer = await ctx.create_signal(int, name="watchdog")
    seen: list[str] = []

    async def watcher() -> None:
        for i in range(10):
            if await ctx.run(check, i):
                await writer.send(i)
                return

    async def worker() -> None:
        try:
            async with signal:
                await asyncio.sleep(3600)
        except duron.SignalInterrupt as interrupt:
            seen.append(f"stopped by check {interrupt.value} at {await ctx.time()}")

    await asyncio.gather(worker(), watcher())
    return seen


async def test_signal_between_durable_tasks() -> None:
    storage = MemoryLogStorage()
    first = await run_hosted(watchdog, storage, no_host)
    assert len(first) == 1
    assert first[0].startswith("stopped by check 3 at ")
    assert effect_calls == ["check 0", "check 1", "check 2", "check 3"]
    assert await replay_same(watchdog, storage) == first


# -- deadlines inside a signal block -------------------------------------------------------


@duron.durable
async def deadline_in_block(
    ctx: duron.Context,
    stop: duron.Signal[str] = duron.Provided,
    events: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    seen: list[str] = []
    for i, limit in enumerate([0.05, 30.0, 30.0]):
        began = await ctx.time()
        try:
            async with stop:
                with anyio.fail_after(limit):
                    future_id, answer = await ctx.create_future(str, name=f"answer {i}")
                    await events.send(f"round {i}:{future_id}")
                    seen.append(f"answered {await answer}")
        except TimeoutError:
            seen.append(f"timed out after {await ctx.time() - began:.3f} s")
        except duron.SignalInterrupt as interrupt:
            seen.append(f"interrupted by {interrupt.value}")
    return seen


async def test_fail_after_inside_a_signal_block_replays_identically() -> None:
    storage = MemoryLogStorage()
    host = react({"round 1": ("stop", "enough"), "round 2": ("future", "yes")})
    expected = ["timed out after 0.050 s", "interrupted by enough", "answered yes"]
    assert await run_hosted(deadline_in_block, storage, host) == expected
    with anyio.fail_after(5):
        assert await replay_same(deadline_in_block, storage) == expected
