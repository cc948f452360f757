"""The quickstart's shape, in process: first run records, second run replays."""

from __future__ import annotations

import asyncio

import pytest

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

calls: list[str] = []


@duron.effect
async def greet(name: str) -> str:
    calls.append(name)
    return f"Hello, {name}!"


@duron.durable
async def flow(ctx: duron.Context, name: str) -> str:
    a, b = await asyncio.gather(ctx.run(greet, name), ctx.run(greet, name + "!"))
    return a + " " + b


async def test_second_run_replays_without_running_effects() -> None:
    calls.clear()
    storage = MemoryLogStorage()
    async with flow.invoke(storage) as job:
        await job.start("Ada")
        first = await job.wait()
    assert sorted(calls) == ["Ada", "Ada!"]
    async with flow.invoke(storage) as job:
        await job.start("Ada")
        second = await job.wait()
    assert second == first == "Hello, Ada! Hello, Ada!!"
    assert sorted(calls) == ["Ada", "Ada!"]
