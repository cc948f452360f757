"""Invariant 1, write-ahead: durable code sees an outcome only after its entry is in
the log (and, in the file store's fsync mode, on disk)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from support import run_job

import duron
from duron._log import decode_entry
from duron.contrib.storage import FileLogStorage, MemoryLogStorage

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

seen: list[tuple[int, list[int]]] = []
"""What durable code saw, with the results the log held at that moment."""

probe: MemoryLogStorage | None = None


def logged_results() -> list[int]:
    assert probe is not None
    out = []
    for i, raw in enumerate(probe.raw):
        entry = decode_entry(raw, job="probe", offset=i)
        if entry.type == "done" and isinstance(entry.result, int):
            out.append(entry.result)
    return out


@duron.effect
async def square(i: int) -> int:
    return i * i


@duron.durable
async def squares(ctx: duron.Context, n: int) -> int:
    total = 0
    for i in range(n):
        value = await ctx.run(square, i)
        # Peeking at the log from durable code is fine in a test: nothing else may.
        seen.append((value, logged_results()))
        total += value
    return total


async def test_every_result_is_in_the_log_before_durable_code_sees_it() -> None:
    global probe
    seen.clear()
    probe = MemoryLogStorage()
    assert await run_job(squares, probe, 20) == sum(i * i for i in range(20))
    assert len(seen) == 20
    for value, logged in seen:
        assert value in logged


class GatedStorage(MemoryLogStorage):
    """Appends wait for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.waiting = anyio.Event()

    async def append(self, entries: Sequence[bytes], /) -> None:
        self.waiting.set()
        await self.gate.wait()
        await super().append(entries)


marks: list[str] = []


@duron.effect
async def fetch() -> str:
    return "value"


@duron.durable
async def one_fetch(ctx: duron.Context) -> str:
    value = await ctx.run(fetch)
    marks.append(value)
    return value


async def test_durable_code_waits_while_the_append_is_in_flight() -> None:
    marks.clear()
    storage = GatedStorage()
    storage.gate.set()  # the job entry
    async with one_fetch.invoke(storage) as job:
        await job.start()
        storage.gate = anyio.Event()
        storage.waiting = anyio.Event()
        with anyio.fail_after(5):
            await storage.waiting.wait()  # the effect's outcome is being appended
        for _ in range(20):
            await anyio.sleep(0)
        assert marks == []  # ... so durable code has not seen it
        storage.gate.set()
        assert await job.wait() == "value"
    assert marks == ["value"]


async def test_fsync_mode_syncs_before_durable_code_sees_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks.clear()
    order: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        order.append("fsync")

    monkeypatch.setattr(os, "fsync", fsync)

    @duron.durable(name="synced_fetch")
    async def synced_fetch(ctx: duron.Context) -> str:
        value = await ctx.run(fetch)
        order.append("seen")
        return value

    storage = FileLogStorage(tmp_path / "log.jsonl", durability="fsync")
    assert await run_job(synced_fetch, storage) == "value"
    assert "seen" in order
    assert "fsync" in order[: order.index("seen")]


@duron.durable
async def echo(
    ctx: duron.Context, inbox: duron.Stream[str] = duron.Provided
) -> list[str]:
    got: list[str] = []
    async for message in inbox:
        got.append(message)
        seen_inputs.append((message, len(probe.raw) if probe else 0))
    return got


seen_inputs: list[tuple[str, int]] = []


async def test_host_input_is_logged_before_send_returns_and_before_delivery() -> None:
    global probe
    seen_inputs.clear()
    probe = storage = MemoryLogStorage()
    async with echo.invoke(storage) as job:
        await job.start()
        inbox = await job.open_stream("inbox", "w")
        await inbox.send("hi")
        entries: list[Any] = [
            decode_entry(r, job="x", offset=i) for i, r in enumerate(storage.raw)
        ]
        assert any(e.type == "emit" and e.value == "hi" for e in entries)
        await inbox.close()
        assert await job.wait() == ["hi"]
    ((message, log_length),) = seen_inputs
    assert message == "hi"
    emitted_at = next(
        i for i, r in enumerate(storage.raw) if b'"emit"' in r and b'"hi"' in r
    )
    assert log_length > emitted_at
