"""Calls with wrong arguments are refused before anything is written or recorded,
and durable functions take every kind of parameter."""

from __future__ import annotations

import re

import pytest
from support import run_job

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = pytest.mark.anyio

ran: list[tuple[int, int]] = []


@duron.effect
async def add(a: int, b: int) -> int:
    ran.append((a, b))
    return a + b


@duron.durable
async def needs_two(ctx: duron.Context, a: int, b: int) -> int:
    return await ctx.run(add, a, b)


async def test_start_without_a_required_argument_writes_nothing() -> None:
    storage = MemoryLogStorage()
    async with needs_two.invoke(storage) as job:
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "needs_two() called with bad arguments: missing a required argument: "
                "'b'"
            ),
        ):
            await job.start(1)  # type: ignore[call-arg]
    assert storage.entries() == []


async def test_start_with_too_many_arguments_writes_nothing() -> None:
    storage = MemoryLogStorage()
    async with needs_two.invoke(storage) as job:
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "needs_two() called with bad arguments: too many positional arguments"
            ),
        ):
            await job.start(1, 2, 3)  # type: ignore[call-arg]
    assert storage.entries() == []


@duron.durable
async def calls_add_with_one(ctx: duron.Context) -> int:
    result: int = await ctx.run(add, 1)  # type: ignore[call-overload]
    return result


async def test_an_effect_called_without_a_required_argument_is_refused() -> None:
    # Not a TypeError recorded as the effect's outcome (and replayed forever): a
    # usage error in durable code, before the call is recorded or run.
    ran.clear()
    storage = MemoryLogStorage()
    async with calls_add_with_one.invoke(storage) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "add() called with bad arguments: missing a required argument: 'b'"
            ),
        ):
            await job.wait()
    assert ran == []
    assert [e.type for e in storage.entries()] == ["job"]


@duron.durable
async def calls_add_by_keyword(ctx: duron.Context) -> int:
    return await ctx.run(add, b=2, a=1)


async def test_keywords_still_bind() -> None:
    ran.clear()
    assert await run_job(calls_add_by_keyword, MemoryLogStorage()) == 3
    assert ran == [(1, 2)]


@duron.durable
async def variadic(
    ctx: duron.Context, /, first: int, *rest: int, scale: int = 1, **tags: str
) -> list[object]:
    return [first, list(rest), scale, dict(tags)]


async def test_a_durable_function_with_star_args_and_kwargs_runs_and_replays() -> None:
    storage = MemoryLogStorage()
    expected = [1, [2, 3], 10, {"who": "ada"}]
    for _ in range(2):  # live, then started again with the same call: replayed
        async with variadic.invoke(storage) as job:
            await job.start(1, 2, 3, scale=10, who="ada")
            assert await job.wait() == expected
    assert storage.entries()[0].to_json()["args"] == {
        "first": 1,
        "rest": [2, 3],
        "scale": 10,
        "tags": {"who": "ada"},
    }
