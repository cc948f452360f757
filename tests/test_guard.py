"""The determinism guard: I/O through the durable loop is refused, and (under
``duron.testing.determinism_guard()``) so are the clock and random sources."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron
from duron import NondeterministicCallError, UsageError
from duron._durable_loop import REFUSED_IO
from duron.contrib.storage import MemoryLogStorage, SQLiteStore
from duron.testing import determinism_guard, verify_async

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def run(fn: duron.DurableFn[..., Any], *args: Any) -> Any:
    async with fn.invoke(MemoryLogStorage(label="guarded")) as job:
        await job.start(*args)
        return await job.wait()


# -- I/O through the durable loop ----------------------------------------------------


def io_refused(action: str, name: str) -> str:
    where = (
        "a plain-def @duron.effect (it runs in a worker thread)"
        if name in ("run_in_executor", "set_default_executor", "call_soon_threadsafe")
        else "an @duron.effect"
    )
    return (
        f"durable code cannot {action} (loop.{name}): it would not be recorded, and "
        f"a replay would do it again; do it in {where} and await it with ctx.run"
    )


@duron.durable
async def call_loop(ctx: duron.Context, name: str) -> None:
    method = getattr(asyncio.get_running_loop(), name)
    result = method(None, None)
    if asyncio.iscoroutine(result):
        await result


@pytest.mark.parametrize(("name", "action"), sorted(REFUSED_IO.items()))
async def test_every_io_method_of_the_durable_loop_is_refused(
    name: str, action: str
) -> None:
    with pytest.raises(UsageError) as info:
        await run(call_loop, name)
    assert str(info.value) == io_refused(action, name)


def plain() -> int:
    return 1


async def open_connection() -> Any:
    return await asyncio.open_connection("127.0.0.1", 9)


async def subprocess() -> Any:
    return await asyncio.create_subprocess_exec("true")


async def to_thread() -> Any:
    return await asyncio.to_thread(plain)


async def resolve() -> Any:
    return await asyncio.get_running_loop().getaddrinfo("localhost", 80)


async def reader() -> Any:
    a, b = socket.socketpair()
    try:
        asyncio.get_running_loop().add_reader(a.fileno(), plain)
    finally:
        a.close()
        b.close()


HIGH_LEVEL: dict[str, tuple[Callable[[], Any], str]] = {
    "open_connection": (open_connection, "create_connection"),
    "create_subprocess_exec": (subprocess, "subprocess_exec"),
    "to_thread": (to_thread, "run_in_executor"),
    "getaddrinfo": (resolve, "getaddrinfo"),
    "add_reader": (reader, "add_reader"),
}


@duron.durable
async def high_level(ctx: duron.Context, which: str) -> None:
    await HIGH_LEVEL[which][0]()


@pytest.mark.parametrize("which", sorted(HIGH_LEVEL))
async def test_asyncio_and_anyio_io_in_durable_code_is_refused(which: str) -> None:
    name = HIGH_LEVEL[which][1]
    with pytest.raises(UsageError) as info:
        await run(high_level, which)
    assert str(info.value) == io_refused(REFUSED_IO[name], name)


# -- the clock and random sources, under the guard --------------------------------


async def anyio_thread() -> int:
    return await anyio.to_thread.run_sync(plain)  # the line the guard names


CLOCK = "use `await ctx.time()` (or ctx.time_ns()), the job's recorded clock"
RANDOM_BYTES = (
    "make the value in an @duron.effect (its result is recorded), or derive it "
    "from ctx.random() (e.g. uuid.UUID(int=ctx.random().getrandbits(128), "
    "version=4))"
)
GLOBAL_RANDOM = "use ctx.random(), a generator seeded for this point of the job"
NOW = "use datetime.fromtimestamp(await ctx.time(), timezone.utc)"

# One per line, so that the line the guard names is the lambda's first.
MISTAKES: dict[str, tuple[Callable[[], object], str, str]] = {
    "time.time": (lambda: time.time(), "time.time()", CLOCK),
    "time.time_ns": (lambda: time.time_ns(), "time.time_ns()", CLOCK),
    "time.monotonic": (lambda: time.monotonic(), "time.monotonic()", CLOCK),
    "time.perf_counter": (lambda: time.perf_counter(), "time.perf_counter()", CLOCK),
    "datetime.now": (lambda: datetime.datetime.now(), "datetime.now()", NOW),
    "datetime.utcnow": (lambda: datetime.datetime.utcnow(), "datetime.utcnow()", NOW),
    "date.today": (lambda: datetime.date.today(), "date.today()", NOW),
    "random.random": (
        lambda: random.random(),
        "random.random() (the global random generator)",
        GLOBAL_RANDOM,
    ),
    "random.randint": (
        lambda: random.randint(1, 6),
        "random.getrandbits() (the global random generator)",
        GLOBAL_RANDOM,
    ),
    "random.shuffle": (
        lambda: random.shuffle([1, 2, 3]),
        "random.getrandbits() (the global random generator)",
        GLOBAL_RANDOM,
    ),
    "uuid.uuid4": (lambda: uuid.uuid4(), "os.urandom()", RANDOM_BYTES),
    "uuid.uuid1": (lambda: uuid.uuid1(), "uuid.uuid1()", RANDOM_BYTES),
    "os.urandom": (lambda: os.urandom(8), "os.urandom()", RANDOM_BYTES),
    "secrets.token_hex": (lambda: secrets.token_hex(8), "os.urandom()", RANDOM_BYTES),
    # Without the guard this one waits forever: the worker thread's callback is
    # refused by the durable loop, in the thread.
    "anyio.to_thread": (
        lambda: anyio_thread(),
        "_thread.start_new_thread() (a new thread)",
        "do thread work in a plain-def @duron.effect (it runs in a worker thread)",
    ),
    "threading.Thread": (
        lambda: threading.Thread(target=plain).start(),
        "_thread.start_new_thread() (a new thread)",
        "do thread work in a plain-def @duron.effect (it runs in a worker thread)",
    ),
}


@duron.durable
async def mistake(ctx: duron.Context, which: str) -> str:
    await asyncio.sleep(0.001)  # not in the first step only
    value = MISTAKES[which][0]()
    if asyncio.iscoroutine(value):
        value = await value
    return repr(value)


def refused(which: str) -> str:
    fn, call, advice = MISTAKES[which]
    code = anyio_thread.__code__ if which == "anyio.to_thread" else fn.__code__
    line = code.co_firstlineno + (1 if which == "anyio.to_thread" else 0)
    where = f"{__file__}:{line}"
    reason = (
        "its work would not be recorded, and its callbacks cannot reach durable code"
        if "thread" in call
        else "its result differs on every run, so a replay could take another path"
    )
    return f"durable code called {call} at {where}: {reason}; {advice}"


@pytest.mark.parametrize("which", sorted(MISTAKES))
async def test_the_guard_refuses_each_call_at_the_call(which: str) -> None:
    with determinism_guard(), pytest.raises(NondeterministicCallError) as info:
        await run(mistake, which)
    assert str(info.value) == refused(which)
    assert isinstance(info.value, UsageError)  # terminal: never retried


@pytest.mark.parametrize("which", ["time.time", "uuid.uuid4", "random.random"])
async def test_without_the_guard_nothing_is_checked(which: str) -> None:
    assert isinstance(await run(mistake, which), str)


@duron.durable
async def branches_on_the_clock(ctx: duron.Context) -> str:
    # The mistake `duron verify` only catches when a replay lands on the other side.
    return "even" if int(time.time() * 1000) % 2 == 0 else "odd"


async def test_the_clock_is_caught_every_time_not_by_chance() -> None:
    where = (
        f"{__file__}:{branches_on_the_clock.__wrapped__.__code__.co_firstlineno + 3}"
    )
    for _ in range(6):
        with determinism_guard(), pytest.raises(NondeterministicCallError) as info:
            await run(branches_on_the_clock)
        assert info.value.where == where
        assert info.value.call == "time.time()"


# -- correct code goes through ----------------------------------------------------

log = logging.getLogger("test_guard")


@duron.effect
async def stamp(tag: str) -> str:
    # Effects may read the clock and random sources: their results are recorded.
    return f"{tag}:{time.time() > 0}:{len(str(uuid.uuid4()))}:{random.random() < 1}"


@duron.effect
def stamp_in_thread(tag: str) -> str:
    return f"{tag}:{datetime.datetime.now().year > 2000}:{len(secrets.token_hex(4))}"


@duron.effect
async def slow(tag: str) -> str:
    await anyio.sleep(0.01)
    return f"{tag}:{time.monotonic() > 0}"


@duron.durable
async def correct(ctx: duron.Context) -> list[str]:
    log.info("starting")  # logging reads the clock for its records: allowed
    got = list(await asyncio.gather(ctx.run(stamp, "a"), ctx.run(stamp_in_thread, "b")))
    await asyncio.sleep(0.01)
    got.append(await asyncio.wait_for(ctx.run(slow, "c"), timeout=60))
    if sys.version_info >= (3, 11):
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(ctx.run(stamp, "d"))
            t2 = tg.create_task(ctx.run(slow, "e"))
        got += [t1.result(), t2.result()]
    else:
        got += list(await asyncio.gather(ctx.run(stamp, "d"), ctx.run(slow, "e")))
    async with anyio.create_task_group() as atg:
        atg.start_soon(anyio.sleep, 0.01)
    with anyio.move_on_after(0.01):
        await anyio.sleep(60)
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(60)
        else:
            await asyncio.wait_for(asyncio.sleep(60), 0.01)
    except (TimeoutError, asyncio.TimeoutError):
        got.append("timed out")
    now = await ctx.time()
    got.append(f"{now > 0}:{ctx.random().randint(1, 6) in range(1, 7)}")
    got.append(str(datetime.datetime.fromtimestamp(now, datetime.timezone.utc).year))
    got.append(str(uuid.UUID(int=ctx.random().getrandbits(128), version=4).version))
    return got


async def test_correct_durable_code_runs_and_replays_under_the_guard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MemoryLogStorage(label="correct")
    with determinism_guard(), caplog.at_level(logging.INFO, logger="test_guard"):
        async with correct.invoke(storage) as job:
            await job.start()
            got = await job.wait()
        year = str(datetime.datetime.now(datetime.timezone.utc).year)
        assert got == [
            "a:True:36:True",
            "b:True:8",
            "c:True",
            "d:True:36:True",
            "e:True",
            "timed out",
            "True:True",
            year,
            "4",
        ]
        again = MemoryLogStorage(storage.raw, label="correct")
        async with correct.invoke(again) as job:
            await job.resume()
            assert await job.wait() == got
        assert (await verify_async(correct, again)).ok
    assert caplog.messages.count("starting") == 3  # first run, resume, verify


async def test_a_worker_runs_jobs_under_the_guard(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        ok = await store.submit(correct.options(job_id="ok"))
        bad = await store.submit(mistake.options(job_id="bad"), "time.time")
        with determinism_guard():
            async with duron.Worker(store, [correct, mistake]) as worker:
                await worker.wait_idle()
        assert (await store.get(ok)).status == "completed"
        info = await store.get(bad)
        assert info.status == "failed"
        assert info.error is not None
        assert info.error.message == refused("time.time")


timings: list[float] = []


def timing_gc_callback(phase: str, info: dict[str, int]) -> None:
    timings.append(time.perf_counter())  # what a test tool's gc hook does


@duron.durable
async def collects(ctx: duron.Context) -> str:
    import gc

    await asyncio.sleep(0.001)
    gc.collect()  # a collection in the middle of durable code
    return "ok"


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
async def test_a_garbage_collection_callback_is_not_durable_code() -> None:
    import gc

    timings.clear()
    gc.callbacks.append(timing_gc_callback)
    try:
        with determinism_guard():
            assert await run(collects) == "ok"
    finally:
        gc.callbacks.remove(timing_gc_callback)
    # It ran in both phases of every collection, let through each time.
    assert timings
    assert len(timings) % 2 == 0
