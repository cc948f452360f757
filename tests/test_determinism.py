"""Determinism: whatever the host timing, a replay takes the path the first run took.

Effects here sleep a latency drawn from a seeded RNG (the seed is drawn by
hypothesis), so the order in which they finish, which timeouts fire and which
timers come first changes from one example to the next. Each example runs the job
live once, then replays its log twice, and checks that replay runs no effect, asks
for the same operations at the same positions and returns the same result, down to
the clock readings durable code made along the way.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from unittest import mock

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import resume_job, run_job

import duron
from duron._effect import effect_spec
from duron._engine import Engine
from duron._entries import JobFinished, JobStarted, OpCompleted, OpStarted
from duron._log import encode_entry
from duron.contrib.storage import MemoryLogStorage

if TYPE_CHECKING:
    from duron._operations import Op as EngineOp

pytestmark = pytest.mark.anyio

HAS_TASKGROUP = sys.version_info >= (3, 11)

Op = tuple[int, str, Any]
"""An operation as the code asked for it: (position, name, encoded inputs)."""


class HostTiming:
    """How long each live effect takes, and which effects really ran."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.calls: list[str] = []

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls.clear()

    def latency(self) -> float | None:
        # A third finish at once, so that several land in one batch; half of those
        # never wait at all (None: no await), which on asyncio over a memory log
        # commits them from inside ctx.run when nothing else is pending.
        r = self.rng.random()
        if r < 0.15:
            return None
        return 0.0 if r < 0.3 else self.rng.uniform(0.0, 0.02)


async def wait(latency: float | None) -> None:
    if latency is not None:
        await anyio.sleep(latency)


timing = HostTiming()


@duron.effect
async def fetch(tag: str) -> str:
    timing.calls.append(tag)
    await wait(timing.latency())
    return tag.upper()


@duron.effect
async def fetch_or_fail(tag: str) -> str:
    timing.calls.append(tag)
    latency = timing.latency()
    await wait(latency)
    if latency is not None and latency > 0.01:
        raise ValueError(f"{tag} took too long")
    return tag.upper()


@duron.effect
async def slow(ms: int) -> str:
    timing.calls.append(f"slow{ms}")
    await anyio.sleep(ms / 1000)
    return f"slow{ms}"


@duron.effect
async def trivial(i: int) -> int:
    timing.calls.append("trivial")
    return i


@duron.durable
async def mixed(ctx: duron.Context, width: int, taskgroup: bool) -> list[str]:
    """Every kind of concurrency durable code may use, racing effects and timers."""
    t0 = await ctx.time()
    seen: list[str] = []

    async def note(what: str) -> None:
        # The clock reading makes the result depend on when each step happened.
        seen.append(f"{what}@{await ctx.time() - t0!r}")

    async def fetch_noted(tag: str) -> str:
        value = await ctx.run(fetch, tag)
        await note(value)
        return value

    async def tick(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await note(name)

    ticker = asyncio.create_task(tick("tick", 0.008))
    gathered = await asyncio.gather(*(fetch_noted(f"g{i}") for i in range(width)))
    seen.append("+".join(gathered))
    for i in range(3):
        try:
            await asyncio.wait_for(fetch_noted(f"w{i}"), 0.01)
        except asyncio.TimeoutError:
            await note(f"timeout{i}")
    try:
        await note(await ctx.run(fetch_or_fail, "e0"))
    except ValueError as exc:  # raised live or rebuilt from the log: same type
        await note(f"error:{exc}")
    with anyio.move_on_after(0.01) as scope:
        await fetch_noted("m0")
    if scope.cancelled_caught:
        await note("moved-on")
    background = asyncio.create_task(fetch_noted("bg"))
    await asyncio.sleep(0.005)
    await note("slept")
    if taskgroup:
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as tg:
                for i in range(width):
                    tg.create_task(fetch_noted(f"tg{i}"))
                tg.create_task(tick("tg-tick", 0.004))
        else:  # pragma: no cover - the test passes taskgroup=HAS_TASKGROUP
            raise RuntimeError("asyncio.TaskGroup needs Python 3.11")
    async with anyio.create_task_group() as atg:
        for i in range(width):
            atg.start_soon(fetch_noted, f"a{i}")
        await anyio.sleep(0.006)
        await note("anyio-slept")
    await background
    await ticker
    return seen


@duron.durable
async def race(ctx: duron.Context, ms: int) -> list[str]:
    """A timeout racing an effect, then a timer racing an effect beside it."""
    out: list[str] = []
    try:
        out.append(await asyncio.wait_for(ctx.run(slow, ms), 0.01))
    except asyncio.TimeoutError:
        out.append("timeout")

    async def sleeper() -> None:
        await asyncio.sleep(0.01)
        out.append("timer")

    async def worker() -> None:
        out.append(await ctx.run(slow, ms))

    await asyncio.gather(sleeper(), worker())
    return out


@duron.durable
async def after_a_timer(ctx: duron.Context) -> list[str]:
    out: list[str] = []

    async def one(tag: str) -> None:
        out.append(await ctx.run(fetch, tag))

    await asyncio.sleep(0.01)
    await asyncio.gather(one("x"), one("y"))
    return out


@duron.durable
async def long_result(ctx: duron.Context) -> list[str]:
    return [f"item-{i}" for i in range(20)]


class HostClock:
    """The host clock given to the job (``invoke(clock=...)``), with a jump."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


host_clock = HostClock()


@duron.effect
async def outlive_the_timeout() -> str:
    host_clock.shift += 1.0  # by the host clock, this took a second
    return "too late"


@duron.durable
async def timed_out(ctx: duron.Context) -> str:
    try:
        return await asyncio.wait_for(ctx.run(outlive_the_timeout), 0.5)
    except asyncio.TimeoutError:
        return "timed out"


@duron.durable
async def wide(ctx: duron.Context, n: int) -> int:
    values = await asyncio.gather(*(ctx.run(trivial, i) for i in range(n)))
    return sum(values)


@contextmanager
def issued_ops() -> Iterator[list[Op]]:
    """Every operation durable code asks for while this is open, in issue order."""
    seen: list[Op] = []
    asked: list[tuple[str, dict[str, Any] | None]] = []
    original = Engine.issue
    original_recorded = Engine.recorded_at_once
    original_take = Engine.take_at_once

    def issue(self: Engine, op: EngineOp) -> EngineOp:
        original(self, op)
        if op.kind != "input":
            seen.append((op.id, op.name, op.inputs))
        return op

    def recorded_at_once(
        self: Engine,
        kind: str,
        name: str,
        inputs: dict[str, Any] | None,
        deadline: float | None,
    ) -> OpCompleted | None:
        asked[:] = [(name, inputs)]
        return original_recorded(self, kind, name, inputs, deadline)

    def take_at_once(self: Engine, done: OpCompleted) -> None:
        # The replay shortcut issues and completes an operation in one call.
        position = self.next_id
        original_take(self, done)
        name, inputs = asked[0]
        seen.append((position, name, inputs))

    with (
        mock.patch.object(Engine, "issue", issue),
        mock.patch.object(Engine, "recorded_at_once", recorded_at_once),
        mock.patch.object(Engine, "take_at_once", take_at_once),
    ):
        yield seen


def logged_ops(storage: MemoryLogStorage) -> list[Op]:
    """The operations the log names (by a start entry or a self-describing done)."""
    ops: dict[int, Op] = {}
    for entry in storage.entries():
        if isinstance(entry, OpStarted) or (
            isinstance(entry, OpCompleted) and entry.name is not None
        ):
            assert entry.name is not None
            ops[entry.id] = (entry.id, entry.name, entry.inputs)
    return [ops[i] for i in sorted(ops)]


@settings(
    max_examples=25,
    deadline=None,
)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(1, 4))
async def test_replay_follows_the_first_run_whatever_the_timing(
    seed: int, width: int
) -> None:
    timing.reseed(seed)
    storage = MemoryLogStorage()
    with issued_ops() as live_ops:
        live = await run_job(mixed, storage, width, HAS_TASKGROUP)
    # Every op issued live ran once, except that a timeout may abandon one before
    # its task started.
    issued_tags = [inputs["tag"] for _, _, inputs in live_ops]
    assert len(set(timing.calls)) == len(timing.calls)
    assert set(timing.calls) <= set(issued_tags)
    assert all(t in timing.calls for t in issued_tags if t[0] not in "wm")
    log = storage.raw

    timing.calls.clear()
    with issued_ops() as replay_ops:
        first = await run_job(mixed, storage, width, HAS_TASKGROUP)
    with issued_ops() as replay_ops_again:
        second = await run_job(mixed, storage, width, HAS_TASKGROUP)

    assert timing.calls == []  # (a) replay runs no effect
    assert first == live  # (b) the same result, clock readings included
    assert second == first  # (d) and again
    assert storage.raw == log  # replaying a finished job writes nothing
    # (c) the same operations at the same positions, live and on every replay ...
    assert replay_ops == live_ops
    assert replay_ops_again == replay_ops
    # ... and what the log names is what the code asked for there.
    logged = logged_ops(storage)
    logged_ids = {op[0] for op in logged}
    assert [op for op in replay_ops if op[0] in logged_ids] == logged
    # An op the log never names was abandoned before anything was written for it:
    # only a timeout (``wait_for``, ``move_on_after``) does that here.
    for _, _, inputs in (op for op in replay_ops if op[0] not in logged_ids):
        tag = inputs["tag"]
        gave_up = f"timeout{tag[1:]}@" if tag.startswith("w") else "moved-on@"
        assert any(s.startswith(gave_up) for s in live), (tag, live)
    if HAS_TASKGROUP:
        assert any(s.startswith("TG0@") for s in live), live


@settings(
    max_examples=15,  # each example runs the job live twice
    deadline=None,
)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 4),
    cut=st.floats(0.0, 1.0),
)
async def test_a_job_resumed_from_any_prefix_of_its_log_replays_identically(
    seed: int, width: int, cut: float
) -> None:
    """A crash leaves a prefix of the log; the resumed run, replayed, stays itself."""
    timing.reseed(seed)
    original = MemoryLogStorage()
    await run_job(mixed, original, width, HAS_TASKGROUP)
    raw = original.raw
    prefix = raw[: 1 + round(cut * (len(raw) - 1))]  # always keeps the job entry
    prefix_done = {
        entry.id
        for entry in MemoryLogStorage(prefix).entries()
        if isinstance(entry, OpCompleted)
    }

    storage = MemoryLogStorage(prefix)
    timing.calls.clear()
    with issued_ops() as resumed_ops:
        resumed = await resume_job(mixed, storage)
    assert storage.raw[: len(prefix)] == prefix  # the log only grew
    # What the prefix recorded as done did not run again.
    rerun = {op[0] for op in resumed_ops if op[2]["tag"] in timing.calls}
    assert rerun.isdisjoint(prefix_done)

    final = storage.raw
    timing.calls.clear()
    with issued_ops() as replay_ops:
        assert await run_job(mixed, storage, width, HAS_TASKGROUP) == resumed
    assert timing.calls == []
    assert replay_ops == resumed_ops
    assert storage.raw == final


@pytest.mark.skipif(
    not HAS_TASKGROUP,
    reason="asyncio.TaskGroup is new in Python 3.11: on 3.10 the determinism "
    "test runs its workflow without the TaskGroup part",
)
async def test_the_taskgroup_part_runs_and_replays() -> None:
    timing.reseed(7)
    storage = MemoryLogStorage()
    live = await run_job(mixed, storage, 2, True)
    assert any(s.startswith("tg-tick@") for s in live), live
    assert any(s.startswith("TG1@") for s in live), live
    timing.calls.clear()
    assert await run_job(mixed, storage, 2, True) == live
    assert timing.calls == []


@pytest.mark.parametrize("ms", [0, 5, 9, 11, 15, 30])
async def test_timers_racing_effects_replay_in_the_live_order(ms: int) -> None:
    timing.reseed(0)
    storage = MemoryLogStorage()
    live = await run_job(race, storage, ms)
    assert len(live) == 3
    assert live[0] in ("timeout", f"slow{ms}")
    assert sorted(live[1:]) == sorted(["timer", f"slow{ms}"])
    timing.calls.clear()
    assert await run_job(race, storage, ms) == live
    assert timing.calls == []


def race_log(t0: float, done_at: list[float]) -> MemoryLogStorage:
    """A log of ``race(ms=7)`` whose effects finished ``done_at`` seconds after t0."""
    name = effect_spec(slow).name
    entries: list[Any] = [JobStarted(race.name, {"ms": 7}, "seed", t0, race.module)]
    for i, delay in enumerate(done_at):
        entries.append(
            OpCompleted(i, t0 + delay, "slow7", None, "effect", name, {"ms": 7})
        )
    return MemoryLogStorage([encode_entry(e) for e in entries])


@pytest.mark.parametrize(
    ("done_at", "expected"),
    [
        # The first effect beats the 10 ms timeout; the second (issued at +5 ms)
        # beats the 10 ms timer started beside it, or loses to it.
        ([0.005, 0.006], ["slow7", "slow7", "timer"]),
        ([0.005, 0.016], ["slow7", "timer", "slow7"]),
        # Finishing exactly at the deadline is too late: the timer fires first.
        ([0.01, 0.012], ["timeout", "slow7", "timer"]),
        # The log says the first effect finished after the timeout: replay times
        # out even though the result is in the log (and never hands it over).
        ([0.02, 0.025], ["timeout", "timer", "slow7"]),
        ([0.015, 0.019], ["timeout", "slow7", "timer"]),
    ],
)
async def test_replay_takes_time_from_the_log_not_the_host(
    done_at: list[float], expected: list[str]
) -> None:
    timing.reseed(0)
    t0 = 1_700_000_000.0
    storage = race_log(t0, done_at)
    assert await resume_job(race, storage) == expected
    assert timing.calls == []  # both results came from the log
    assert await resume_job(race, storage) == expected  # the end entry agrees
    assert timing.calls == []


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
async def test_results_after_a_timer_are_delivered_in_log_order(
    order: list[int],
) -> None:
    # The timer fires on the way to the first entry; the code it wakes asks for
    # both effects. The second entry must not be handed over before the first.
    t0 = 1_700_000_000.0
    name = effect_spec(fetch).name
    tags = ["x", "y"]
    entries: list[Any] = [JobStarted(after_a_timer.name, {}, "seed", t0)]
    for i in order:
        result = tags[i].upper()
        entries.append(
            OpCompleted(i, t0 + 0.02, result, None, "effect", name, {"tag": tags[i]})
        )
    timing.reseed(0)
    storage = MemoryLogStorage([encode_entry(e) for e in entries])
    assert await resume_job(after_a_timer, storage) == [tags[i].upper() for i in order]
    assert timing.calls == []


async def test_a_result_that_comes_after_its_timeout_loses_to_it() -> None:
    # The result and the timeout are due in the same step: the timer, due first,
    # fires first, live and on replay, and the late result is dropped.
    host_clock.shift = 0.0
    storage = MemoryLogStorage()
    assert await run_job(timed_out, storage, clock=host_clock) == "timed out"
    assert await run_job(timed_out, storage) == "timed out"


async def test_a_long_result_that_changed_is_shown_where_it_differs() -> None:
    recorded: list[duron.JSONValue] = [f"item-{i}" for i in range(20)]
    recorded[17] = "item-XVII"
    t0 = 1_700_000_000.0
    storage = MemoryLogStorage(
        [
            encode_entry(JobStarted(long_result.name, {}, "seed", t0)),
            encode_entry(JobFinished(t0, recorded)),
        ]
    )
    # Both sides are cut at the same place, just before the difference.
    message = (
        "job <memory>: at position 0 the log recorded the job's end with result "
        "..., 'item-15', 'item-16', 'item-XVII', 'item-18', 'item-19'] but the "
        "code now asks for an end with result ..., 'item-15', 'item-16', "
        "'item-17', 'item-18', 'item-19']. The durable function no longer "
        "replays this log: restore the old code path (ctx.patched can carry both) "
        "or start a new job"
    )
    with pytest.raises(duron.NonDeterminismError, match=re.escape(message)):
        await resume_job(long_result, storage)


# Replay that went quadratic in the number of pending ops (a scan per delivery)
# would take tens of seconds here instead of about one.
@pytest.mark.timeout(60)
async def test_a_4000_way_gather_runs_and_replays() -> None:
    n = 4000
    timing.reseed(0)
    storage = MemoryLogStorage()
    assert await run_job(wide, storage, n) == n * (n - 1) // 2
    assert len(timing.calls) == n
    timing.calls.clear()
    assert await run_job(wide, storage, n) == n * (n - 1) // 2
    assert timing.calls == []
