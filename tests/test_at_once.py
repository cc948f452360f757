"""Effects that finish at once: on an asyncio host, with a storage whose appends never
wait, an effect called when nothing else is pending runs from inside ``ctx.run``,
its outcome is committed there and durable code continues without a driver round
trip. Everything an effect sees must stay what it sees when started by the driver:
its own task, the host's loop and asyncgen hooks, the host's context variables."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from support import run_job

import duron
from duron._driver import CHECKPOINT_EVERY
from duron._durable_loop import in_durable_code
from duron._host_backends import AsyncioHost
from duron._log import decode_entry
from duron._storage import nowait_appender
from duron.contrib.storage import FileLogStorage, MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@duron.effect
async def read_var(wait: bool) -> str:
    if wait:
        await anyio.sleep(0)
    seen = var.get()
    var.set("set by an effect")  # must not leak into the next effect
    return seen


@duron.durable
async def var_flow(ctx: duron.Context) -> list[str]:
    var.set("set by durable code")
    return [
        await ctx.run(read_var, False),
        await ctx.run(read_var, True),
        await ctx.run(read_var, False),
    ]


async def test_effects_see_the_hosts_context_whether_they_wait_or_not() -> None:
    token = var.set("host")
    try:
        assert await run_job(var_flow, MemoryLogStorage()) == ["host"] * 3
    finally:
        var.reset(token)


@duron.effect
async def in_own_task(wait: bool) -> dict[str, Any]:
    task = asyncio.current_task() if _on_asyncio() else None
    with anyio.fail_after(5):  # a cancel scope bound to the task entering it
        if wait:
            await anyio.sleep(0.001)
    return {
        "own_task": task is not None and task is asyncio.current_task(),
        "durable": in_durable_code(),
        "hooks": sys.get_asyncgen_hooks() == host_hooks[0],
    }


host_hooks: list[Any] = []


def _on_asyncio() -> bool:
    import sniffio

    return sniffio.current_async_library() == "asyncio"


@duron.durable
async def task_flow(ctx: duron.Context) -> list[dict[str, Any]]:
    return [await ctx.run(in_own_task, w) for w in (False, True, False)]


async def test_an_effect_runs_in_its_own_task_on_the_host_loop() -> None:
    host_hooks[:] = [sys.get_asyncgen_hooks()]
    results = await run_job(task_flow, MemoryLogStorage())
    want = {"own_task": _on_asyncio(), "durable": False, "hooks": True}
    assert results == [want] * 3


calls: list[int] = []


@duron.effect
async def step(i: int) -> int:
    calls.append(i)
    return i + 1


@duron.durable
async def steps(ctx: duron.Context, n: int) -> int:
    return sum([await ctx.run(step, i) for i in range(n)])


async def test_finished_effects_are_committed_before_durable_code_continues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline = _count_inline(monkeypatch)
    storage = MemoryLogStorage()
    calls.clear()
    assert await run_job(steps, storage, 50) == sum(range(1, 51))
    assert calls == list(range(50))
    if _on_asyncio():
        assert inline[0] >= 49  # all but the first, which the job's start records
    entries = storage.entries()
    done = [e for e in entries if e.type == "done"]
    assert [(e.id, e.name, e.inputs, e.result) for e in done] == [
        (i, "step", {"i": i}, i + 1) for i in range(50)
    ]
    calls.clear()
    assert await run_job(steps, storage, 50) == sum(range(1, 51))  # replay
    assert calls == []


def _count_inline(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    real = AsyncioHost.start_effect

    def spy(self: AsyncioHost, *args: Any, **kwargs: Any) -> Any:
        count[0] += kwargs.get("from_durable", False)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AsyncioHost, "start_effect", spy)
    return count


ticks = 0
seen_ticks: list[int] = []


@duron.effect
async def note_tick(i: int) -> int:
    seen_ticks.append(ticks)
    return i


async def test_a_long_run_of_instant_effects_lets_other_host_tasks_run() -> None:
    global ticks
    ticks = 0
    seen_ticks.clear()

    @duron.durable(name="ticked")
    async def ticked(ctx: duron.Context, n: int) -> int:
        return sum([await ctx.run(note_tick, i) for i in range(n)])

    async def ticker() -> None:
        global ticks
        while True:
            ticks += 1
            await anyio.sleep(0)

    n = 20 * CHECKPOINT_EVERY
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0)
        assert await run_job(ticked, MemoryLogStorage(), n) == sum(range(n))
        tg.cancel_scope.cancel()
    longest = max(sum(1 for t in seen_ticks if t == v) for v in set(seen_ticks))
    assert longest <= 2 * CHECKPOINT_EVERY, longest


@duron.effect
async def boom(i: int) -> int:
    raise ValueError(f"boom {i}")


@duron.durable
async def catching(ctx: duron.Context) -> list[str]:
    out = []
    for i in range(3):
        try:
            await ctx.run(boom, i)
        except ValueError as exc:
            out.append(str(exc))
    return out


async def test_an_effect_that_raises_at_once_raises_in_durable_code() -> None:
    storage = MemoryLogStorage()
    want = ["boom 0", "boom 1", "boom 2"]
    assert await run_job(catching, storage) == want
    errors = [e.error for e in storage.entries() if e.type == "done"]
    assert [(e.type, e.message) for e in errors if e is not None] == [
        ("builtins.ValueError", f"boom {i}") for i in range(3)
    ]
    assert await run_job(catching, storage) == want  # replayed


@duron.effect
async def unencodable(i: int) -> int:
    return "not a number"  # type: ignore[return-value]


@duron.durable
async def refused(ctx: duron.Context) -> int:
    await ctx.run(step, 0)
    return await ctx.run(unencodable, 1)


async def test_a_result_that_cannot_be_encoded_fails_the_job_unlogged() -> None:
    storage = MemoryLogStorage()
    with pytest.raises(duron.PayloadError, match="result of effect unencodable"):
        await run_job(refused, storage)
    names = [e.name for e in storage.entries() if e.type == "done"]
    assert names == ["step"]


class CountingStorage(MemoryLogStorage):
    """Overrides ``append`` only: every write must still come through it."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    async def append(self, entries: Sequence[bytes], /) -> None:
        self.appends += 1
        await super().append(entries)


async def test_a_subclass_overriding_append_keeps_every_write(tmp_path: Any) -> None:
    storage = CountingStorage()
    assert nowait_appender(storage) is None
    assert await run_job(steps, storage, 10) == sum(range(1, 11))
    assert storage.appends == len(storage.raw)  # one batch per step, job entry too
    assert nowait_appender(MemoryLogStorage()) is not None
    assert nowait_appender(FileLogStorage(tmp_path / "a.jsonl")) is not None


async def test_fsync_mode_never_appends_without_waiting(tmp_path: Any) -> None:
    storage = FileLogStorage(tmp_path / "log.jsonl", durability="fsync")
    await storage.acquire()
    try:
        assert storage.append_nowait([b'{"x":1}']) is False
        assert [r async for r in storage.read()] == []  # nothing was written
    finally:
        await storage.release()
    assert await run_job(steps, storage, 5) == sum(range(1, 6))
    raw = [r async for _, r in storage.read()]
    assert [decode_entry(r, job="t", offset=0).type for r in raw][-1] == "end"
