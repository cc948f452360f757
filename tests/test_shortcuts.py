"""The driver's two shortcuts are leaves of its general path, not other algorithms.

A replayed call whose recorded end comes next takes it at once, and a live effect
that ends in its first step on a quiet job is committed from inside ``ctx.run``
(see duron/_durable_calls.py). Random workflows run here with the shortcuts on and off
(``Driver.shortcuts``): the logs must be byte for byte the same, the results
equal, and replaying either way must run nothing, write nothing and give the
same result.

The host clock is a fake one that effects move forward, so that every entry's
time is the same whichever path wrote it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import resume_job

import duron
import duron._driver
from duron._driver import Driver
from duron._durable_calls import DurableCalls
from duron._entries import JobStarted
from duron._log import encode_entry
from duron.contrib.storage import FileLogStorage, MemoryLogStorage

pytestmark = pytest.mark.anyio

T = 1_700_000_000.0


class Clock:
    """The host clock: moves only when an effect runs (by a float-exact step)."""

    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> float:
        return self.now


clock = Clock()
runs: list[str] = []


def _ran(what: str) -> None:
    runs.append(what)
    clock.now += 0.125


@duron.effect
async def instant(i: int) -> int:
    _ran(f"instant {i}")
    return i * 2


@duron.effect
async def yielding(i: int) -> int:
    _ran(f"yielding {i}")
    await anyio.sleep(0)  # one round of the host loop
    return i * 3


@duron.effect
async def failing(i: int) -> int:
    _ran(f"failing {i}")
    raise ValueError(f"no {i}")


@duron.effect
def threaded(i: int) -> int:
    _ran(f"threaded {i}")
    return i * 5


EFFECTS = {
    "instant": instant,
    "yielding": yielding,
    "failing": failing,
    "threaded": threaded,
}


@duron.durable
async def workflow(ctx: duron.Context, plan: list[list[Any]]) -> list[Any]:
    out: list[Any] = []

    async def call(kind: str, i: int) -> Any:
        try:
            return await ctx.run(EFFECTS[kind], i)
        except ValueError as exc:
            return f"error {exc}"

    for n, step in enumerate(plan):
        match step:
            case ["run", kind]:
                out.append(await call(kind, n))
            case ["gather", kinds]:
                out.append(
                    await asyncio.gather(
                        *(call(k, 100 * n + i) for i, k in enumerate(kinds))
                    )
                )
            case ["task", first, second]:
                task = asyncio.create_task(call(first, n))
                out.append(await call(second, 1000 + n))
                out.append(await task)
            case ["patched", change]:
                out.append(await ctx.patched(change))
            case ["chains", chains]:
                # Tasks that go on calling after their first call returns: what
                # one does next must not jump outcomes of the others.
                async def chain(c: int, kinds: list[str], n: int = n) -> list[Any]:
                    return [
                        await call(k, 10_000 * n + 100 * c + i)
                        for i, k in enumerate(kinds)
                    ]

                out.append(
                    await asyncio.gather(*(chain(c, ks) for c, ks in enumerate(chains)))
                )
    return out


kinds = st.sampled_from(sorted(EFFECTS))
# A thread's timing is the host's: two of them at once may land in one write or
# two, shortcuts or not. Threaded effects run alone.
concurrent = st.sampled_from(["failing", "instant", "yielding"])
steps = st.one_of(
    st.tuples(st.just("run"), kinds),
    st.tuples(st.just("gather"), st.lists(concurrent, min_size=1, max_size=4)),
    st.tuples(st.just("task"), concurrent, concurrent),
    st.tuples(st.just("patched"), st.sampled_from(["a", "b"])),
    st.tuples(
        st.just("chains"),
        st.lists(st.lists(concurrent, min_size=1, max_size=3), min_size=2, max_size=3),
    ),
)
plans = st.lists(steps, min_size=1, max_size=8).map(lambda ss: [list(s) for s in ss])


def job_entry(plan: list[list[Any]]) -> bytes:
    args: dict[str, Any] = {"plan": plan}
    return encode_entry(JobStarted(workflow.name, args, "seed", T))


async def run_with(
    shortcuts: bool, storage: duron.LogStorage, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setattr(Driver, "shortcuts", shortcuts)
    # No start entry written because an operation ran long by the wall clock.
    monkeypatch.setattr(duron._driver, "START_FLUSH_DELAY", 3600.0)
    clock.now = T
    try:
        return await resume_job(workflow, storage, clock=clock)
    finally:
        monkeypatch.undo()


# On asyncio only: the live shortcut exists only there, and trio shuffles the order
# in which ready tasks run (so concurrent effects' outcomes may batch differently
# from one run to the next, shortcuts or not).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@settings(max_examples=60, deadline=None)
@given(plan=plans)
async def test_shortcuts_write_the_same_log_and_return_the_same_results(
    plan: list[list[Any]],
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        logs: dict[bool, list[bytes]] = {}
        results: dict[bool, Any] = {}
        effect_runs: dict[bool, list[str]] = {}
        for shortcuts in (True, False):
            runs.clear()
            storage = MemoryLogStorage([job_entry(plan)])
            results[shortcuts] = await run_with(shortcuts, storage, monkeypatch)
            logs[shortcuts] = storage.raw
            effect_runs[shortcuts] = list(runs)
        assert logs[True] == logs[False]
        assert results[True] == results[False]
        assert effect_runs[True] == effect_runs[False]

        for shortcuts in (True, False):
            runs.clear()
            storage = MemoryLogStorage(logs[True])
            assert await run_with(shortcuts, storage, monkeypatch) == results[True]
            assert runs == []
            assert storage.raw == logs[True]


async def test_the_live_shortcut_is_taken_on_a_quiet_job(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    # A guard against the property test comparing the general path with itself:
    # on asyncio, sequential instant effects are committed from ctx.run, and the
    # replay hands their recorded results over without a future.
    plan = [["run", "instant"], ["run", "instant"], ["run", "failing"]]
    taken: list[str] = []
    original_commit = Driver.commit_at_once
    original_replay = DurableCalls._replay_at_once

    def commit_at_once(self: Driver, done: Any) -> bool:
        ok = original_commit(self, done)
        taken.append(f"live {ok}")
        return ok

    def replay_at_once(self: DurableCalls, spec: Any, inputs: Any) -> Any:
        out = original_replay(self, spec, inputs)
        taken.append(f"replay {out is not None}")
        return out

    monkeypatch.setattr(Driver, "commit_at_once", commit_at_once)
    monkeypatch.setattr(DurableCalls, "_replay_at_once", replay_at_once)
    storage = MemoryLogStorage([job_entry(plan)])
    clock.now = T
    expected = [0, 2, "error no 2"]
    assert await resume_job(workflow, storage, clock=clock) == expected
    assert await resume_job(workflow, storage, clock=clock) == expected
    # The first call comes before the live rounds begin (the clock is still to be
    # moved to the host's time): it takes the general path.
    live = ["live True"] * 2 if anyio_backend == "asyncio" else []
    assert taken == [*live, "replay True", "replay True", "replay True"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_file_storage_in_flush_mode_takes_the_same_path(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan: list[list[Any]] = [
        ["run", "instant"],
        ["gather", ["instant", "yielding"]],
        ["run", "failing"],
    ]
    logs = []
    for shortcuts in (True, False):
        path = tmp_path / f"{shortcuts}.jsonl"
        path.write_bytes(job_entry(plan) + b"\n")
        await run_with(shortcuts, FileLogStorage(path), monkeypatch)
        logs.append(path.read_bytes())
    assert logs[0] == logs[1]


# -- found by review: the live shortcut taken while a batch was being delivered ------

gate: list[anyio.Event] = []


@duron.effect
async def held(n: int) -> int:
    _ran(f"held {n}")
    await gate[0].wait()  # both end in the same step of the host loop
    return n


@duron.durable
async def batch_then_more(ctx: duron.Context) -> list[str]:
    order: list[str] = []

    async def a() -> None:
        await ctx.run(held, 0)
        await ctx.run(instant, 1)
        order.append(f"a {await ctx.run(instant, 2)}")

    async def b() -> None:
        await ctx.run(held, 1)
        order.append(f"b {await ctx.run(instant, 3)}")

    await asyncio.gather(a(), b())
    return order


@duron.durable
async def timer_then_more(ctx: duron.Context) -> list[str]:
    order: list[str] = []

    async def a() -> None:
        await asyncio.sleep(3600)  # falls due while held() runs
        await ctx.run(instant, 1)
        order.append(f"a {await ctx.run(instant, 2)}")

    async def b() -> None:
        await ctx.run(held, 0)
        order.append(f"b {await ctx.run(instant, 3)}")

    await asyncio.gather(a(), b())
    return order


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("flow", [batch_then_more, timer_then_more])
async def test_durable_code_woken_mid_batch_does_not_jump_the_rest_of_it(
    flow: duron.DurableFn[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two outcomes written in one batch (or an outcome and a timer due before
    # it): the task woken by the first may not commit its next effect at once,
    # before the second is delivered, or its own log no longer replays.
    logs: dict[bool, list[bytes]] = {}
    results: dict[bool, list[str]] = {}
    # Only the test moves things on: no start entry written because the effects
    # were held for a while by the wall clock.
    monkeypatch.setattr(duron._driver, "START_FLUSH_DELAY", 3600.0)
    for shortcuts in (True, False):
        monkeypatch.setattr(Driver, "shortcuts", shortcuts)
        clock.now = T
        gate[:] = [anyio.Event()]
        storage = MemoryLogStorage([encode_entry(JobStarted(flow.name, {}, "seed", T))])
        async with flow.invoke(storage, clock=clock) as job:
            await job.resume()
            await anyio.sleep(0.05)
            clock.now = T + 7200  # held() ends after the timer's deadline
            gate[0].set()
            results[shortcuts] = await job.wait()
        logs[shortcuts] = storage.raw
        assert (
            await resume_job(flow, MemoryLogStorage(storage.raw)) == results[shortcuts]
        )
    assert results[True] == results[False]
    assert logs[True] == logs[False]
