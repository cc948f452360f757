"""Child jobs: ``ctx.start_job`` / ``ctx.run_job``.

On a job store a child is a job of its own, whose end completes a future of its
parent through the parent's inbox; on a log of its own it runs inline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron
from duron.contrib.storage import MemoryLogStorage, SQLiteStore

if TYPE_CHECKING:
    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio

shipped: list[str] = []
gate: list[anyio.Event] = []


@duron.effect
async def ship_item(item: str) -> str:
    shipped.append(item)
    return f"shipped {item}"


@duron.durable
async def ship(ctx: duron.Context, item: str) -> str:
    if item == "broken":
        raise ValueError(f"cannot ship {item}")
    return await ctx.run(ship_item, item)


@duron.durable
async def order(ctx: duron.Context, items: list[str]) -> list[str]:
    children = [await ctx.start_job(ship, item) for item in items]
    return list(await asyncio.gather(*children))


@duron.durable
async def order_one(ctx: duron.Context, item: str) -> str:
    try:
        return await ctx.run_job(ship, item)
    except ValueError as exc:
        return f"failed: {exc}"


@duron.effect
async def blocked() -> None:
    await gate[0].wait()


@duron.durable
async def stuck(ctx: duron.Context) -> None:
    await ctx.run(blocked)


@duron.durable
async def parent_of_stuck(ctx: duron.Context) -> None:
    await ctx.run_job(stuck)


def worker(store: Store, *fns: duron.DurableFn[..., Any], **kw: Any) -> duron.Worker:
    kw.setdefault("suspend_after", 0.1)
    return duron.Worker(store, fns, poll_interval=0.05, heartbeat_interval=0.05, **kw)


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def test_children_run_as_jobs_of_their_own_even_on_one_slot(
    backend: Backend,
) -> None:
    shipped.clear()
    store = await backend.store()
    async with worker(store, order, ship, concurrency=1):
        job_id = await store.submit(order.options(job_id="o1"), ["a", "b", "c"])
        result = await store.result(job_id, order, timeout=20)
    assert result == ["shipped a", "shipped b", "shipped c"]
    assert sorted(shipped) == ["a", "b", "c"]
    children = await store.list_jobs(parent="o1")
    assert [(c.id, c.function, c.status, c.parent) for c in children] == [
        ("o1.0", "ship", "completed", "o1"),
        ("o1.2", "ship", "completed", "o1"),
        ("o1.4", "ship", "completed", "o1"),
    ]
    assert (await store.get("o1")).parent is None
    # Run again from its log: replayed, nothing shipped or started twice.
    log = store.log("o1")
    async with order.invoke(log) as job:
        await job.resume()
        assert await job.wait() == result
    assert len(shipped) == 3
    assert len(await store.list_jobs(function="ship")) == 3


async def test_a_childs_error_reaches_the_parent_as_its_own_type(
    backend: Backend,
) -> None:
    store = await backend.store()
    async with worker(store, order_one, ship):
        job_id = await store.submit(order_one, "broken")
        assert await store.result(job_id, order_one, timeout=20) == (
            "failed: cannot ship broken"
        )


async def test_cancelling_the_parent_cancels_its_children(backend: Backend) -> None:
    gate[:] = [anyio.Event()]
    store = await backend.store()
    async with worker(store, parent_of_stuck, stuck):
        parent = await store.submit(parent_of_stuck.options(job_id="p"))

        async def child_running() -> bool:
            return [c.status for c in await store.list_jobs(parent="p")] == ["running"]

        await until(child_running)
        assert await store.cancel(parent)
        with pytest.raises(duron.JobCancelledError):
            await store.result(parent, timeout=20)
        (child,) = await store.list_jobs(parent="p")
        with pytest.raises(duron.JobCancelledError):
            await store.result(child.id, timeout=20)


async def test_cancel_can_leave_the_children_running(backend: Backend) -> None:
    gate[:] = [anyio.Event()]
    store = await backend.store()
    async with worker(store, parent_of_stuck, stuck):
        parent = await store.submit(parent_of_stuck.options(job_id="q"))

        async def child_running() -> bool:
            return [c.status for c in await store.list_jobs(parent="q")] == ["running"]

        await until(child_running)
        assert await store.cancel(parent, children=False)
        with pytest.raises(duron.JobCancelledError):
            await store.result(parent, timeout=20)
        (child,) = await store.list_jobs(parent="q")
        assert (await store.get(child.id)).status == "running"
        gate[0].set()
        await store.result(child.id, stuck, timeout=20)
        assert (await store.get(child.id)).status == "completed"


async def test_on_a_log_of_its_own_a_child_runs_inline() -> None:
    shipped.clear()
    storage = MemoryLogStorage()
    async with order.invoke(storage) as job:
        await job.start(["x", "y"])
        assert await job.wait() == ["shipped x", "shipped y"]
    assert sorted(shipped) == ["x", "y"]
    async with order.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == ["shipped x", "shipped y"]
    assert sorted(shipped) == ["x", "y"]


@duron.durable
async def reader(ctx: duron.Context, items: duron.Stream[str] = duron.Provided) -> str:
    return "never"


@duron.durable
async def starts_reader(ctx: duron.Context) -> str:
    return await ctx.run_job(reader)


async def test_inline_children_cannot_take_injected_parameters() -> None:
    async with starts_reader.invoke(MemoryLogStorage()) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "ctx.start_job(reader): on a log of its own the child runs inline, "
                "in the parent, and cannot have injected parameters (items); use a "
                "job store (SQLiteStore, PostgresStore) to run it as a job of its own"
            ),
        ):
            await job.wait()


@duron.durable
async def starts_an_effect(ctx: duron.Context) -> None:
    await ctx.start_job(ship_item, "z")  # type: ignore[arg-type]


async def test_start_job_takes_a_durable_function() -> None:
    async with starts_an_effect.invoke(MemoryLogStorage()) as job:
        await job.start()
        with pytest.raises(duron.UsageError, match=r"^ctx\.start_job takes a @duron"):
            await job.wait()


def test_a_parent_and_its_children_across_two_workers_one_killed(
    tmp_path: Any,
) -> None:
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    here = Path(__file__).parent
    sys.path.insert(0, str(here))
    import child_jobs_worker as jobs

    db, side = tmp_path / "jobs.db", tmp_path / "side.txt"
    items = [f"i{n}" for n in range(6)]

    async def submit() -> None:
        async with SQLiteStore(db) as store:
            await store.submit(jobs.order.options(job_id="big"), items)

    anyio.run(submit)

    def spawn() -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, str(here / "child_jobs_worker.py"), str(db), str(side)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
        return p

    victim, survivor = spawn(), spawn()
    deadline = time.monotonic() + 30
    while not (side.exists() and side.read_text().strip()):
        assert time.monotonic() < deadline, "nothing was shipped"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err

    async def check() -> None:
        async with SQLiteStore(db) as store:
            assert await store.result("big", jobs.order) == [
                f"shipped {i}" for i in items
            ]
            children = await store.list_jobs(parent="big")
            assert [c.function for c in children] == ["ship"] * 6
            assert {c.status for c in children} == {"completed"}

    anyio.run(check)
    shipped = [line.split()[0] for line in side.read_text().splitlines()]
    # Each item shipped; one cut off by the kill may have shipped twice.
    assert sorted(set(shipped)) == sorted(items)
    assert len(shipped) <= len(items) + 2


def test_the_cli_lists_a_jobs_children_and_shows_their_parent(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import orjson

    from duron._cli import main

    db = tmp_path / "jobs.db"

    async def run_order() -> None:
        async with SQLiteStore(db) as store, worker(store, order, ship):
            await store.submit(order.options(job_id="o9"), ["p", "q"])
            await store.result("o9", order, timeout=20)

    anyio.run(run_order)
    capsys.readouterr()
    assert main(["jobs", "list", f"sqlite:///{db}", "--parent", "o9", "--json"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(j["id"], j["parent"], j["status"]) for j in lines] == [
        ("o9.0", "o9", "completed"),
        ("o9.2", "o9", "completed"),
    ]
    assert main(["jobs", "show", f"sqlite:///{db}", "o9.2"]) == 0
    assert "\nparent:  o9\n" in capsys.readouterr().out


# -- children of a job that continues as new --------------------------------------------


@duron.durable
async def poller(ctx: duron.Context, n: int, same: bool) -> int:
    await ctx.run_job(ship, "same" if same else f"item{n}")
    if n < 2:
        ctx.continue_as_new(n + 1, same)
    return n


@pytest.mark.parametrize("same", [False, True])
async def test_each_run_of_a_job_that_continues_as_new_starts_its_own_children(
    backend: Backend, same: bool
) -> None:
    # Positions start again at 0 in each run: the run is part of a child's id.
    store = await backend.store()
    async with worker(store, poller, ship):
        job_id = await store.submit(poller.options(job_id="p"), 0, same)
        assert await store.result(job_id, poller, timeout=20) == 2
    children = await store.list_jobs(parent="p")
    assert [c.id for c in children] == ["p.0", "p.1.0", "p.2.0"]


@duron.effect
async def slow_value() -> str:
    await anyio.sleep(0.5)
    return "child's result"


@duron.durable
async def slow_child(ctx: duron.Context) -> str:
    return await ctx.run(slow_value)


@duron.durable
async def chained(ctx: duron.Context, n: int) -> str:
    if n == 0:
        await ctx.start_job(slow_child)  # not awaited: run 0 moves on
        ctx.continue_as_new(1)
    future_id, value = await ctx.create_future(str, name="approval")
    return f"{future_id}: {await value}"


async def test_a_child_of_an_earlier_run_never_completes_a_later_runs_future(
    backend: Backend,
) -> None:
    store = await backend.store()
    async with worker(store, chained, slow_child):
        job_id = await store.submit(chained.options(job_id="c1"), 0)

        async def started() -> bool:
            return bool(await store.list_jobs(parent="c1"))

        await until(started)
        await store.result("c1.0", slow_child, timeout=20)  # the child ended
        await anyio.sleep(0.3)
        assert (await store.get(job_id)).status != "completed"
        await store.complete_future(job_id, "0", result="approved")
        assert await store.result(job_id, chained, timeout=20) == "0: approved"
