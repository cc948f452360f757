"""Durable futures: made by durable code, completed by the host, recorded when completed.

A future's id is its operation's position (a string); the host learns it from what
the durable code sends on a ``StreamWriter``. Completions are validated against the
future's type before anything is written.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable
from typing import Any

import anyio
import pytest
from support import run_hosted

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


effect_calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    effect_calls.clear()


async def no_host(job: duron.Job[..., Any]) -> None:
    pass


async def replay_same(dfn: duron.DurableFn[..., Any], storage: MemoryLogStorage) -> Any:
    log, calls = storage.raw, list(effect_calls)
    result = await run_hosted(dfn, storage, no_host)
    assert storage.raw == log
    assert effect_calls == calls
    return result


def no_pending(future_id: str) -> str:
    return (
        f"job <memory>: no pending future {future_id!r} (unknown, already completed, "
        "or no longer awaited); check job.is_future_pending first"
    )


@duron.effect
async def charge(amount: int) -> str:
    effect_calls.append(f"charge {amount}")
    return f"charged {amount}"


@duron.durable
async def approval_flow(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> str:
    approval_id, approved = await ctx.create_future(int, name="approval")
    await asks.send(approval_id)
    try:
        amount = await approved
    except PermissionError as err:
        return f"refused: {err}"
    return await ctx.run(charge, amount)


async def test_host_completes_a_future_and_replay_does_not_ask_again() -> None:
    storage = MemoryLogStorage()
    pending: list[bool] = []

    async def host(job: duron.Job[..., Any]) -> None:
        async for future_id in await job.open_stream("asks", "r"):
            pending.append(job.is_future_pending(future_id))
            await job.complete_future(future_id, result=42)
            pending.append(job.is_future_pending(future_id))

    assert await run_hosted(approval_flow, storage, host) == "charged 42"
    assert pending == [True, False]
    assert effect_calls == ["charge 42"]
    # The future is an operation of its own and its id is its position: 0 here, as
    # an output stream is not an operation.
    futures = [
        e.to_json() for e in storage.entries() if getattr(e, "kind", None) == "future"
    ]
    assert len(futures) == 1
    assert futures[0]["id"] == 0
    assert futures[0]["name"] == "approval"
    assert futures[0]["result"] == 42

    replayed: list[str] = []

    async def replay_host(job: duron.Job[..., Any]) -> None:
        async for future_id in await job.open_stream("asks", "r"):
            replayed.append(future_id)
            assert not job.is_future_pending(future_id)

    log = storage.raw
    assert await run_hosted(approval_flow, storage, replay_host) == "charged 42"
    assert replayed == ["0"]
    assert effect_calls == ["charge 42"]
    assert storage.raw == log


async def test_completing_with_an_exception_raises_it_in_durable_code() -> None:
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        async for future_id in await job.open_stream("asks", "r"):
            await job.complete_future(
                future_id, exception=PermissionError("manager said no")
            )

    assert await run_hosted(approval_flow, storage, host) == "refused: manager said no"
    assert await replay_same(approval_flow, storage) == "refused: manager said no"
    assert effect_calls == []


@duron.durable
async def two_amounts(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> int:
    first_id, first = await ctx.create_future(int, name="approval")
    second_id, second = await ctx.create_future(int, name="confirmation")
    await asks.send(first_id)
    await asks.send(second_id)
    return await first + await second


async def test_completion_errors() -> None:
    storage = MemoryLogStorage()
    async with two_amounts.invoke(storage) as job:
        assert not job.is_future_pending("0")
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "job <memory>: complete_future needs a started job: call start() "
                "or resume() first"
            ),
        ):
            await job.complete_future("0", result=1)
        await job.start()
        asks = await job.open_stream("asks", "r")
        first, second = await asks.__anext__(), await asks.__anext__()
        for unknown in ("7", "approval", "-1"):
            with pytest.raises(duron.UsageError, match=re.escape(no_pending(unknown))):
                await job.complete_future(unknown, result=1)
        before = storage.raw
        with pytest.raises(
            duron.PayloadError,
            match=re.escape(
                "job <memory>: result for future '0' (approval) (int): cannot encode str: Input should "
                "be a valid integer, unable to parse string as an integer"
            ),
        ):
            await job.complete_future(first, result="lots")
        assert storage.raw == before  # nothing half-written
        assert job.is_future_pending(first)  # and it still waits
        await job.complete_future(first, result=5)
        assert not job.is_future_pending(first)
        assert job.is_future_pending(second)
        with pytest.raises(duron.UsageError, match=re.escape(no_pending(first))):
            await job.complete_future(first, result=6)
        with pytest.raises(duron.UsageError, match=re.escape(no_pending(first))):
            await job.complete_future(first, exception=ValueError("late"))
        await job.complete_future(second, result=1)
        assert await job.wait() == 6
        log = storage.raw
        with pytest.raises(
            duron.UsageError,
            match=re.escape("job <memory> has ended; it takes no more input"),
        ):
            await job.complete_future(second, result=7)
        assert not job.is_future_pending(second)
    assert storage.raw == log


async def test_a_future_pending_when_the_job_stopped_is_completed_after_resume() -> (
    None
):
    storage = MemoryLogStorage()
    async with approval_flow.invoke(storage) as job:
        await job.start()
        future_id = await (await job.open_stream("asks", "r")).__anext__()
        assert job.is_future_pending(future_id)
    # The process stopped here; a new one resumes the job and answers the question
    # the durable code asked before the stop.
    async with approval_flow.invoke(storage) as job:
        await job.resume()
        await job.complete_future(future_id, result=9)  # waits for replay to end
        assert await job.wait() == "charged 9"
    async with approval_flow.invoke(storage) as job:
        await job.resume()
        asks = [a async for a in await job.open_stream("asks", "r")]
        assert asks == [future_id]
        assert not job.is_future_pending(future_id)
        assert await job.wait() == "charged 9"
    assert effect_calls == ["charge 9"]


@duron.durable
async def two_questions(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    first_id, first = await ctx.create_future(str, name="first")
    second_id, second = await ctx.create_future(str, name="second")
    await asks.send(first_id)
    await asks.send(second_id)
    order: list[str] = []

    async def note(label: str, fut: Awaitable[str]) -> str:
        value = await fut
        order.append(label)
        return value

    answers = await asyncio.gather(note("first", first), note("second", second))
    return [*answers, *order]


async def test_futures_completed_out_of_order() -> None:
    storage = MemoryLogStorage()

    async def reverse_host(job: duron.Job[..., Any]) -> None:
        asks = await job.open_stream("asks", "r")
        ids = [await asks.__anext__(), await asks.__anext__()]
        assert ids == ["0", "1"]
        await job.complete_future(ids[1], result="b")
        await job.complete_future(ids[0], result="a")

    expected = ["a", "b", "second", "first"]
    assert await run_hosted(two_questions, storage, reverse_host) == expected
    assert await replay_same(two_questions, storage) == expected


# -- deadlines -------------------------------------------------------------------------------


@duron.durable
async def impatient(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    seen: list[str] = []
    for i, limit in enumerate([0.05, 30.0]):
        future_id, answer = await ctx.create_future(str, name=f"question {i}")
        await asks.send(future_id)
        began = await ctx.time()
        try:
            seen.append(await asyncio.wait_for(answer, limit))
        except asyncio.TimeoutError:
            seen.append(f"no answer after {await ctx.time() - began:.3f} s")
    return seen


async def test_wait_for_on_a_future_is_a_durable_deadline() -> None:
    storage = MemoryLogStorage()
    late: list[str] = []

    async def host(job: duron.Job[..., Any]) -> None:
        asks = await job.open_stream("asks", "r")
        first = await asks.__anext__()
        second = await asks.__anext__()  # the first question timed out by now
        assert not job.is_future_pending(first)
        with pytest.raises(duron.UsageError, match=re.escape(no_pending(first))):
            await job.complete_future(first, result="too late")
        late.append(first)
        await job.complete_future(second, result="in time")

    expected = ["no answer after 0.050 s", "in time"]
    assert await run_hosted(impatient, storage, host) == expected
    assert late == ["0"]
    with anyio.fail_after(5):  # the deadline is replayed from the log, not waited
        assert await replay_same(impatient, storage) == expected


@duron.durable
async def racing_answers(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    seen: list[str] = []
    for i in range(8):
        future_id, answer = await ctx.create_future(int, name=f"round {i}")
        await asks.send(future_id)
        try:
            seen.append(
                f"{await asyncio.wait_for(answer, 0.004)} at {await ctx.time()}"
            )
        except asyncio.TimeoutError:
            seen.append(f"timeout at {await ctx.time()}")
    await asks.close()
    return seen


@pytest.mark.parametrize("seed", range(3))
async def test_deadlines_racing_completions_replay_identically(seed: int) -> None:
    rng = random.Random(seed)
    storage = MemoryLogStorage()
    answered: list[str] = []

    async def host(job: duron.Job[..., Any]) -> None:
        async for future_id in await job.open_stream("asks", "r"):
            await anyio.sleep(rng.random() * 0.008)
            try:
                await job.complete_future(future_id, result=int(future_id))
            except duron.UsageError:
                continue  # its deadline passed first
            answered.append(future_id)

    first = await run_hosted(racing_answers, storage, host)
    assert len(first) == 8
    assert sum(not s.startswith("timeout") for s in first) == len(answered)
    assert await replay_same(racing_answers, storage) == first


# -- misuse ---------------------------------------------------------------------------------

kept: list[duron.Context] = []


@duron.durable
async def keeps_context(ctx: duron.Context) -> None:
    kept.append(ctx)


async def test_create_future_outside_durable_code() -> None:
    kept.clear()
    await run_hosted(keeps_context, MemoryLogStorage(), no_host)
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "ctx.create_future was called outside this job's durable code; a Context "
            "is only valid inside the durable function it was given to"
        ),
    ):
        await kept[0].create_future(int)


@duron.durable
async def day_long_wait(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> str:
    future_id, answer = await ctx.create_future(str, name="answer within a day")
    await asks.send(future_id)
    began = await ctx.time()
    try:
        return await asyncio.wait_for(answer, 24 * 3600)
    except asyncio.TimeoutError:
        return f"no answer after {await ctx.time() - began:.0f} s"


async def test_a_deadline_that_passed_while_the_job_was_down_fires_on_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = MemoryLogStorage()
    async with day_long_wait.invoke(storage) as job:
        await job.start()
        future_id = await (await job.open_stream("asks", "r")).__anext__()
        assert job.is_future_pending(future_id)
    # The host machine was down for two days: the deadline passed meanwhile.
    shifted = time.time() + 2 * 24 * 3600
    async with day_long_wait.invoke(storage, clock=lambda: shifted) as job:
        with anyio.fail_after(5):
            await job.resume()
            assert await job.wait() == "no answer after 86400 s"
        assert not job.is_future_pending(future_id)
    with anyio.fail_after(5):
        assert await replay_same(day_long_wait, storage) == "no answer after 86400 s"
