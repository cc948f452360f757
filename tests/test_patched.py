"""``ctx.patched``: one code base that replays logs recorded before and after a change.

Every version below is registered under the same durable name, as one function would
be across deployments:

* ``v1``: the old code: step a, wait for approval, step b.
* ``v2``: adds step c behind ``patched("add-c")`` after the approval.
* ``v2_early``: the same patch placed before the approval.
* ``v2_mid``: the patch taken between making the approval future and awaiting it.
* ``v3``: the patch removed, only the new path left.

A patch taken live is recorded as a ``done`` entry of kind ``patch`` at its position;
replay answers True where the log holds that entry, False where the log recorded
something else at that position (or its end), and True where the log stops first.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = pytest.mark.anyio

Host = Callable[["duron.Job[..., Any]"], Awaitable[None]]

effect_calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    effect_calls.clear()


@duron.effect
async def step(what: str) -> str:
    effect_calls.append(what)
    return what.upper()


async def approve(job: duron.Job[..., Any]) -> None:
    async for future_id in await job.open_stream("asks", "r"):
        if job.is_future_pending(future_id):
            await job.complete_future(future_id, result=True)


async def no_host(job: duron.Job[..., Any]) -> None:
    pass


async def run_hosted(
    dfn: duron.DurableFn[..., Any], storage: duron.LogStorage, host: Host = approve
) -> Any:
    async with dfn.invoke(storage) as job:
        await job.start()
        await host(job)
        return await job.wait()


async def replay_same(
    dfn: duron.DurableFn[..., Any], storage: MemoryLogStorage, host: Host = approve
) -> Any:
    """Replay a finished log: nothing may run and nothing may be written."""
    log, calls = storage.raw, list(effect_calls)
    result = await run_hosted(dfn, storage, host)
    assert storage.raw == log
    assert effect_calls == calls
    return result


async def stop_at_approval(dfn: duron.DurableFn[..., Any]) -> MemoryLogStorage:
    """Run ``dfn`` until it waits for approval with that wait in the log, then stop."""
    storage = MemoryLogStorage()
    async with dfn.invoke(storage) as job:
        await job.start()
        future_id = await (await job.open_stream("asks", "r")).__anext__()
        position = int(future_id)
        # The wait's start entry is written after a short idle period: wait for it,
        # so the log shows the job reached the approval.
        with anyio.fail_after(5):
            while not any(
                e.type == "start" and getattr(e, "id", None) == position
                for e in storage.entries()
            ):
                await anyio.sleep(0.005)
    return storage


def patch_entries(storage: MemoryLogStorage) -> list[tuple[int, str]]:
    """(position, change id) of each patch marker in the log."""
    return [
        (int(str(e["id"])), str(e["name"]))
        for e in (entry.to_json() for entry in storage.entries())
        if e["type"] == "done" and e.get("kind") == "patch"
    ]


async def approval(ctx: duron.Context, asks: duron.StreamWriter[str]) -> None:
    future_id, approved = await ctx.create_future(bool, name="approval")
    await asks.send(future_id)
    assert await approved


@duron.durable(name="flow")
async def v1(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    await approval(ctx, asks)
    out.append(await ctx.run(step, "b"))
    return out


@duron.durable(name="flow")
async def v2(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    await approval(ctx, asks)
    if await ctx.patched("add-c"):
        out.append(await ctx.run(step, "c"))
    out.append(await ctx.run(step, "b"))
    return out


@duron.durable(name="flow")
async def v2_early(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    if await ctx.patched("add-c"):
        out.append(await ctx.run(step, "c"))
    await approval(ctx, asks)
    out.append(await ctx.run(step, "b"))
    return out


@duron.durable(name="flow")
async def v2_mid(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    future_id, approved = await ctx.create_future(bool, name="approval")
    await asks.send(future_id)
    if await ctx.patched("add-c"):
        out.append(await ctx.run(step, "c"))
    assert await approved
    out.append(await ctx.run(step, "b"))
    return out


@duron.durable(name="flow")
async def v2_tail(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    await approval(ctx, asks)
    out.append(await ctx.run(step, "b"))
    if await ctx.patched("add-d"):
        out.append(await ctx.run(step, "d"))
    return out


@duron.durable(name="flow")
async def v2_other_id(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    await approval(ctx, asks)
    if await ctx.patched("add-c-v2"):
        out.append(await ctx.run(step, "c"))
    out.append(await ctx.run(step, "b"))
    return out


@duron.durable(name="flow")
async def v2_diverging(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    await approval(ctx, asks)
    if await ctx.patched("add-c"):
        out.append(await ctx.run(step, "c"))
    out.append(await ctx.run(step, "z"))  # a real divergence, patch or not
    return out


@duron.durable(name="flow")
async def v3(
    ctx: duron.Context, asks: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    out = [await ctx.run(step, "a")]
    await approval(ctx, asks)
    out.append(await ctx.run(step, "c"))
    out.append(await ctx.run(step, "b"))
    return out


# -- new jobs and logs recorded with the patch ------------------------------------------


async def test_a_new_job_takes_the_patch_and_records_it() -> None:
    storage = MemoryLogStorage()
    assert await run_hosted(v2, storage) == ["A", "C", "B"]
    assert effect_calls == ["a", "c", "b"]
    # positions: step a 0, approval 1, the patch 2, step c 3, step b 4
    assert patch_entries(storage) == [(2, "add-c")]
    assert await replay_same(v2, storage) == ["A", "C", "B"]


async def test_a_log_recorded_with_the_patch_resumes_with_it() -> None:
    storage = MemoryLogStorage()
    async with v2.invoke(storage) as job:
        await job.start()
        assert await (await job.open_stream("asks", "r")).__anext__() == "1"
        await job.complete_future("1", result=True)
        # Stop once the patch is in the log: resume has to answer from the log.
        with anyio.fail_after(5):
            while not patch_entries(storage):
                await anyio.sleep(0.005)
    async with v2.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == ["A", "C", "B"]
    assert patch_entries(storage) == [(2, "add-c")]
    assert await replay_same(v2, storage) == ["A", "C", "B"]


# -- logs recorded before the patch -------------------------------------------------------


async def test_a_finished_old_log_replays_the_old_path() -> None:
    storage = MemoryLogStorage()
    assert await run_hosted(v1, storage) == ["A", "B"]
    # Another operation at the patch's position: False, wherever the patch sits.
    assert await replay_same(v2, storage) == ["A", "B"]
    assert await replay_same(v2_early, storage) == ["A", "B"]
    assert await replay_same(v2_mid, storage) == ["A", "B"]
    # The job's end at the patch's position: False too.
    assert await replay_same(v2_tail, storage) == ["A", "B"]
    assert patch_entries(storage) == []
    assert effect_calls == ["a", "b"]


async def test_an_old_log_stopped_past_the_patch_point_keeps_the_old_path() -> None:
    storage = await stop_at_approval(v1)
    # v2_early asks at position 1, where the old log already holds the approval.
    assert await run_hosted(v2_early, storage) == ["A", "B"]
    assert effect_calls == ["a", "b"]
    assert patch_entries(storage) == []
    assert await replay_same(v2_early, storage) == ["A", "B"]
    assert await replay_same(v1, storage) == ["A", "B"]


async def test_an_old_log_stopped_before_the_patch_point_takes_the_patch() -> None:
    storage = await stop_at_approval(v1)
    # v2 asks after the approval, which the old run never got: the log stops first.
    assert await run_hosted(v2, storage) == ["A", "C", "B"]
    assert effect_calls == ["a", "c", "b"]
    assert patch_entries(storage) == [(2, "add-c")]
    assert await replay_same(v2, storage) == ["A", "C", "B"]


async def test_a_patch_answered_while_replaying_at_the_logs_end_is_recorded() -> None:
    storage = await stop_at_approval(v1)
    # v2_mid asks during replay, right where the log stops: True, and the marker
    # is written when the job goes live.
    assert await run_hosted(v2_mid, storage) == ["A", "C", "B"]
    assert patch_entries(storage) == [(2, "add-c")]
    assert await replay_same(v2_mid, storage) == ["A", "C", "B"]
    assert effect_calls == ["a", "c", "b"]


# -- what replay reports when patched code meets a log it cannot follow ------------------


def mismatch(position: int, offset: int, recorded: str, requested: str) -> str:
    return re.escape(
        f"job <memory>: at position {position} (log offset {offset}) the log recorded "
        f"{recorded} but the code now asks for {requested}. The durable function no "
        "longer replays this log: restore the old code path (ctx.patched can carry "
        "both) or start a new job"
    )


def offset_of(storage: MemoryLogStorage, position: int) -> int:
    return next(
        i
        for i, e in enumerate(storage.entries())
        if getattr(e, "id", None) == position and e.type in ("start", "done")
    )


async def test_removing_a_patch_still_taken_by_a_log_is_reported() -> None:
    storage = MemoryLogStorage()
    await run_hosted(v2, storage)
    with pytest.raises(
        duron.NonDeterminismError,
        match=mismatch(2, offset_of(storage, 2), "patch add-c", "step(what='c')"),
    ):
        await run_hosted(v3, storage)
    # The old code cannot replay a log that took the patch either.
    with pytest.raises(
        duron.NonDeterminismError,
        match=mismatch(2, offset_of(storage, 2), "patch add-c", "step(what='b')"),
    ):
        await run_hosted(v1, storage)


async def test_renaming_a_patch_is_reported() -> None:
    storage = MemoryLogStorage()
    await run_hosted(v2, storage)
    with pytest.raises(
        duron.NonDeterminismError,
        match=mismatch(2, offset_of(storage, 2), "patch add-c", "step(what='b')"),
    ):
        await run_hosted(v2_other_id, storage)


async def test_a_divergence_after_a_patch_names_the_right_entry() -> None:
    # The answer reads ahead in the log; errors must still name the entry's offset.
    storage = MemoryLogStorage()
    await run_hosted(v1, storage)
    with pytest.raises(
        duron.NonDeterminismError,
        match=mismatch(2, offset_of(storage, 2), "step(what='b')", "step(what='z')"),
    ):
        await run_hosted(v2_diverging, storage)
    storage = MemoryLogStorage()
    await run_hosted(v2, storage)
    effect_calls.clear()
    with pytest.raises(
        duron.NonDeterminismError,
        match=mismatch(4, offset_of(storage, 4), "step(what='b')", "step(what='z')"),
    ):
        await run_hosted(v2_diverging, storage)
    assert effect_calls == []


# -- patches in concurrent code and among timers -------------------------------------------


@duron.effect
async def slow(i: int) -> int:
    await anyio.sleep(0.002 * (i % 3))
    effect_calls.append(f"slow {i}")
    return i


async def busy(ctx: duron.Context) -> list[int]:
    return list(await asyncio.gather(*(ctx.run(slow, i) for i in range(6))))


@duron.durable(name="busy")
async def busy_v1(ctx: duron.Context) -> list[Any]:
    async def later() -> str:
        await asyncio.sleep(0.003)
        return "old"

    done, late = await asyncio.gather(busy(ctx), later())
    return [done, late, "old", "old"]


@duron.durable(name="busy")
async def busy_v2(ctx: duron.Context) -> list[Any]:
    async def later() -> str:
        await asyncio.sleep(0.003)
        return "new" if await ctx.patched("late") else "old"

    async def first(change_id: str) -> str:
        return "new" if await ctx.patched(change_id) else "old"

    done, late, one, two = await asyncio.gather(
        busy(ctx), later(), first("one"), first("two")
    )
    return [done, late, one, two]


async def test_patches_in_concurrent_tasks_and_after_timers() -> None:
    storage = MemoryLogStorage()
    result = await run_hosted(busy_v2, storage, no_host)
    assert result == [[0, 1, 2, 3, 4, 5], "new", "new", "new"]
    assert {name for _, name in patch_entries(storage)} == {"late", "one", "two"}
    for _ in range(3):
        assert await replay_same(busy_v2, storage, no_host) == result

    old = MemoryLogStorage()
    old_result = await run_hosted(busy_v1, old, no_host)
    assert old_result == [[0, 1, 2, 3, 4, 5], "old", "old", "old"]
    for _ in range(3):
        assert await replay_same(busy_v2, old, no_host) == old_result


@duron.durable(name="sleepy")
async def sleepy(ctx: duron.Context) -> str:
    await asyncio.sleep(0.005)
    # Replay reaches this question while advancing the clock to the patch's own
    # entry: the answer must come from that entry.
    taken = await ctx.patched("after-sleep")
    await asyncio.sleep(0.005)  # so the patch's entry is the first one after the timer
    return await ctx.run(step, "new" if taken else "old")


async def test_a_patch_asked_when_a_timer_fires_replays_with_its_answer() -> None:
    storage = MemoryLogStorage()
    assert await run_hosted(sleepy, storage, no_host) == "NEW"
    assert patch_entries(storage) == [(0, "after-sleep")]
    assert await replay_same(sleepy, storage, no_host) == "NEW"


# -- the unawaited form ----------------------------------------------------------------


@duron.durable(name="forgot-await")
async def forgot_await(ctx: duron.Context) -> str:
    if ctx.patched("new-path"):  # the mistake, on purpose
        return "new"
    return "old"


async def test_a_patch_query_used_without_await_is_refused() -> None:
    # Without await, a coroutine would be truthy: the new path, always, and an old
    # log would then fail to replay with advice to use ctx.patched.
    storage = MemoryLogStorage()
    async with forgot_await.invoke(storage) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "ctx.patched('new-path') must be awaited: write "
                "`if await ctx.patched('new-path'):` (without await it would always "
                "take the new path)"
            ),
        ):
            await job.wait()
    # A Duron error in durable code fails the run, not the job: nothing was recorded.
    assert [e.type for e in storage.entries()] == ["job"]


@duron.durable(name="awaited-twice")
async def awaited_twice(ctx: duron.Context) -> bool:
    query = ctx.patched("twice")
    first = await query
    return first and await query


async def test_a_patch_query_is_awaited_once() -> None:
    async with awaited_twice.invoke(MemoryLogStorage()) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "ctx.patched('twice') was already awaited; ask again with a new "
                "ctx.patched(...) call"
            ),
        ):
            await job.wait()


def test_a_patch_query_shows_its_change_id() -> None:
    from duron._context import PatchQuery

    assert repr(PatchQuery(None, "x")) == "<PatchQuery 'x'>"  # type: ignore[arg-type]
