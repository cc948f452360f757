"""``duron.Worker``: running, resuming, failing, cancelling, stopping, losing
leases (on every SQL store: the ``store`` fixture runs a test on SQLite and, when a
server answers, PostgreSQL), and two worker processes sharing one SQLite file."""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest

import duron
from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from store_backends import Backend, Store


HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # for the worker processes' durable functions
import worker_jobs  # noqa: E402

pytestmark = pytest.mark.both_hosts


@dataclass
class State:
    ran: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    release: anyio.Event | None = None


state = State()


@duron.effect
async def step(i: int) -> int:
    state.ran.append(f"step {i}")
    return i * 10


@duron.effect
async def hold(i: int) -> int:
    """Runs until the test sets ``state.release``."""
    state.active += 1
    state.peak = max(state.peak, state.active)
    try:
        assert state.release is not None
        await state.release.wait()
    finally:
        state.active -= 1
    state.ran.append(f"hold {i}")
    return i


@duron.durable
async def steps(ctx: duron.Context, n: int) -> list[int]:
    return [await ctx.run(step, i) for i in range(n)]


@duron.durable
async def step_then_hold(ctx: duron.Context, i: int) -> int:
    await ctx.run(step, i)
    return await ctx.run(hold, i)


@duron.durable
async def cancellable(ctx: duron.Context, i: int) -> int:
    await ctx.run(step, i)
    try:
        return await ctx.run(hold, i)
    except asyncio.CancelledError:
        state.seen.append(f"cancelled {i}")
        raise


@duron.durable
async def broken(ctx: duron.Context, order: int) -> int:
    await ctx.run(step, order)
    raise ValueError(f"order {order} is broken")


@duron.durable
async def unknown(ctx: duron.Context) -> int:
    return 1


@pytest.fixture
async def store(backend: Backend) -> Store:
    """A store on each SQL store (closed by ``backend``)."""
    global state
    state = State(release=anyio.Event())
    return await backend.store(lease=5)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """For the tests that edit a SQLite store's tables behind its back."""
    global state
    state = State(release=anyio.Event())
    s = SQLiteStore(tmp_path / "jobs.db", lease=5)
    yield s
    await s.close()


def worker(store: Store, *fns: duron.DurableFn[..., Any], **kw: Any) -> duron.Worker:
    return duron.Worker(store, fns, poll_interval=0.05, heartbeat_interval=0.05, **kw)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition nothing signals to the test."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


def raw_db(store: SQLiteStore) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


# -- running ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_runs_jobs_submitted_before_and_while_it_runs(store: Store) -> None:
    before = [await store.submit(steps.options(job_id=f"b{n}"), n) for n in range(1, 4)]
    async with worker(store, steps) as w:
        during = [
            await store.submit(steps.options(job_id=f"d{n}"), n) for n in range(1, 4)
        ]
        for job_id in before + during:
            n = int(job_id[1:])
            assert await store.result(job_id, steps) == [i * 10 for i in range(n)]
    assert w.ended == 6
    assert {j.status for j in await store.list_jobs()} == {"completed"}
    assert sorted(state.ran) == sorted(
        f"step {i}" for n in (1, 2, 3) for i in range(n) for _ in "bd"
    )


@pytest.mark.anyio
async def test_runs_at_most_concurrency_jobs_at_once(store: Store) -> None:
    ids = [await store.submit(step_then_hold, i) for i in range(8)]
    async with worker(store, step_then_hold, concurrency=3) as w:
        await until(lambda: state.active == 3)
        assert len(w.running) == 3
        running = await store.list_jobs(status="running")
        assert len(running) == 3
        assert {j.lease_owner for j in running} == {store.owner}
        assert state.release is not None
        state.release.set()
        assert [await store.result(i) for i in ids] == list(range(8))
    assert state.peak == 3


@pytest.mark.anyio
async def test_resumes_unfinished_jobs_on_start(sqlite_store: SQLiteStore) -> None:
    # One job stopped at a safe point by its host...
    async with step_then_hold.invoke(sqlite_store.log("stopped")) as job:
        await job.start(1)
        await until(lambda: state.active == 1)
    assert (await sqlite_store.get("stopped")).status == "pending"
    # ...and one whose process died while it held the job.
    await sqlite_store.submit(steps.options(job_id="orphan"), 1)
    with raw_db(sqlite_store) as db:
        db.execute(
            "UPDATE jobs SET status = 'running', lease_owner = 'dead:1:0', "
            "lease_expires = 1, epoch = 3 WHERE id = 'orphan'"
        )
    assert state.ran == ["step 1"]
    assert state.release is not None
    state.release.set()
    async with worker(sqlite_store, step_then_hold, steps):
        assert await sqlite_store.result("stopped") == 1
        assert await sqlite_store.result("orphan") == [0]
    # The step whose result was logged before the stop did not run again.
    assert sorted(state.ran) == ["hold 1", "step 0", "step 1"]
    assert (await sqlite_store.get("orphan")).epoch == 4


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_job_error_is_recorded_and_re_raised(store: Store) -> None:
    await store.submit(broken.options(job_id="b7"), 7)
    async with worker(store, broken):
        with pytest.raises(ValueError, match=r"^order 7 is broken$"):
            await store.result("b7")
    info = await store.get("b7")
    assert info.status == "failed"
    assert info.error is not None
    assert (info.error.type, info.error.message) == (
        "builtins.ValueError",
        "order 7 is broken",
    )


@pytest.mark.anyio
async def test_a_job_of_a_function_the_worker_lacks_waits_for_a_worker_with_it(
    store: Store,
) -> None:
    await store.submit(unknown.options(job_id="u"))
    await store.submit(steps.options(job_id="s"), 1)
    async with worker(store, steps, broken) as w:
        assert await store.result("s") == [0]
        await anyio.sleep(0.3)  # six polls: none claims "u"
        assert w.running == []
    info = await store.get("u")
    assert (info.status, info.epoch, info.error) == ("pending", 0, None)
    # Deploy a worker that has the function: it runs the job.
    async with worker(store, unknown):
        assert await store.result("u") == 1


class IgnoresFunctions(SQLiteStore):
    """A store whose claims break the protocol: any function, whatever asked."""

    async def claim(
        self,
        limit: int,
        *,
        functions: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
    ) -> list[duron.Claim]:
        return await super().claim(limit)


@pytest.mark.anyio
async def test_a_job_a_store_hands_over_for_a_function_the_worker_lacks_fails(
    tmp_path: Path,
) -> None:
    # Running it is impossible and the protocol has no way to hand it back:
    # failing it, with a clear error, beats claiming it again in a loop.
    store = IgnoresFunctions(tmp_path / "jobs.db", lease=5)
    await store.submit(unknown.options(job_id="u"))
    await store.submit(steps.options(job_id="s"), 1)
    message = (
        "job u: durable function unknown is not registered with this worker (it "
        "runs: broken, steps); pass it to duron.Worker(store, [...]) and requeue the "
        "job with store.requeue() or `duron jobs resume`"
    )
    async with worker(store, steps, broken):
        assert await store.result("s") == [0]
        with pytest.raises(duron.EffectError, match=re.escape(message)):
            await store.result("u")
    info = await store.get("u")
    assert info.status == "failed"
    assert info.error is not None
    assert (info.error.type, info.error.message) == (
        "duron._errors.UnknownFunctionError",
        message,
    )
    # Deploy the function, requeue the job: it runs.
    await store.requeue("u")
    async with worker(store, unknown):
        assert await store.result("u") == 1
    await store.close()


@pytest.mark.anyio
async def test_a_job_whose_log_the_code_no_longer_replays_fails_and_can_be_requeued(
    sqlite_store: SQLiteStore,
) -> None:
    async with steps.invoke(sqlite_store.log("s")) as job:
        await job.start(2)
        await job.wait()
    with raw_db(sqlite_store) as db:  # the job's end is gone, and the code now diverges
        db.execute("DELETE FROM entries WHERE job_id = 's' AND seq >= 2")
        db.execute("UPDATE jobs SET status = 'pending' WHERE id = 's'")

    @duron.durable(name="steps")
    async def changed(ctx: duron.Context, n: int) -> int:
        return await ctx.run(step, 99)

    async with worker(sqlite_store, changed):
        with pytest.raises(
            duron.EffectError, match="NonDeterminismError: job s: at position 0"
        ):
            await sqlite_store.result("s")
    await sqlite_store.requeue("s")
    async with worker(sqlite_store, steps):
        assert await sqlite_store.result("s") == [0, 10]


# -- cancel --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_reaches_the_durable_code_at_its_next_await(
    store: Store,
) -> None:
    await store.submit(cancellable.options(job_id="c"), 1)
    async with worker(store, cancellable):
        await until(lambda: state.active == 1)
        assert await store.cancel("c") is True
        with pytest.raises(duron.JobCancelledError, match=r"^job c was cancelled$"):
            await store.result("c")
    assert state.seen == ["cancelled 1"]
    info = await store.get("c")
    assert (info.status, info.cancel_requested) == ("cancelled", False)
    kinds = [orjson.loads(e)["type"] async for _, e in store.read_log("c")]
    assert kinds[-2:] == ["cancel", "end"]


@pytest.mark.anyio
async def test_a_cancel_from_another_process_is_seen_in_the_jobs_table(
    store: Store, backend: Backend
) -> None:
    await store.submit(cancellable.options(job_id="c"), 3)
    other = await backend.store()  # another process's store object
    async with worker(store, cancellable):
        await until(lambda: state.active == 1)
        assert await other.cancel("c") is True
        with pytest.raises(duron.JobCancelledError, match=r"^job c was cancelled$"):
            await other.result("c")
    assert state.seen == ["cancelled 3"]


@pytest.mark.anyio
async def test_cancel_of_a_stopped_job_is_delivered_when_it_resumes(
    store: Store,
) -> None:
    async with cancellable.invoke(store.log("c")) as job:
        await job.start(2)
        await until(lambda: state.active == 1)
    assert await store.cancel("c") is True
    async with worker(store, cancellable):
        with pytest.raises(duron.JobCancelledError, match=r"^job c was cancelled$"):
            await store.result("c")
    assert state.seen == ["cancelled 2"]
    assert state.ran == ["step 2"]


# -- stopping and leases -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stopping_the_worker_stops_jobs_at_a_safe_point(
    store: Store,
) -> None:
    ids = [await store.submit(step_then_hold, i) for i in range(3)]
    async with worker(store, step_then_hold) as w:
        await until(lambda: state.active == 3)
    assert w.running == []
    assert w.ended == 0
    for info in await store.list_jobs():
        assert (info.status, info.lease_owner, info.lease_expires) == (
            "pending",
            None,
            None,
        )
    assert sorted(state.ran) == ["step 0", "step 1", "step 2"]
    assert state.release is not None
    state.release.set()
    async with worker(store, step_then_hold):
        assert [await store.result(i) for i in ids] == [0, 1, 2]
    assert sorted(state.ran) == [
        "hold 0",
        "hold 1",
        "hold 2",
        "step 0",
        "step 1",
        "step 2",
    ]


@pytest.mark.anyio
async def test_stop_from_another_task_stops_the_jobs_and_the_block_then_ends(
    store: Store,
) -> None:
    # A shutdown handler calls stop() from its own task: the jobs stop at a safe
    # point and release their leases; the block's task leaves the task group.
    await store.submit(step_then_hold, 1)
    stopped = anyio.Event()
    async with worker(store, step_then_hold) as w:
        await until(lambda: state.active == 1)
        async with anyio.create_task_group() as tg:

            async def shutdown() -> None:
                await w.stop()
                stopped.set()

            tg.start_soon(shutdown)
            with anyio.fail_after(10):
                await stopped.wait()
        assert w.running == []
        await w.stop()  # again: a no-op
    (info,) = await store.list_jobs()
    assert (info.status, info.lease_owner) == ("pending", None)


@pytest.mark.anyio
@pytest.mark.parametrize("effect_ends", [False, True], ids=["held", "ends"])
async def test_a_job_whose_lease_was_taken_over_is_stopped_without_writing(
    store: Store, backend: Backend, effect_ends: bool
) -> None:
    await store.submit(step_then_hold.options(job_id="j"), 1)
    async with worker(store, step_then_hold) as w:
        await until(lambda: state.active == 1)
        backend.take_over("j")
        before = backend.entry_count()
        if effect_ends:  # its completion is written at once, and refused
            assert state.release is not None
            state.release.set()
        await until(lambda: w.running == [])
    info = await store.get("j")
    assert (info.status, info.lease_owner) == ("running", "other:1:0")
    assert backend.entry_count() == before


class ClaimsItsOwnJobs(SQLiteStore):
    """A store whose claim takes again a job it holds once that job's lease ran out
    (as the SQLite store did): the worker still runs the job it gets back."""

    async def _claim_rows(
        self,
        limit: int,
        mine: list[str],
        functions: tuple[str, ...] | None,
        queues: tuple[str, ...] | None,
    ) -> list[tuple[str, str, int, Any, Any]]:
        def expired(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE lease_expires < ?", (time.time(),)
            )
            return {job_id for (job_id,) in rows}

        gone = await self._engine.call(expired, op="test", write=False)
        return await super()._claim_rows(
            limit, [j for j in mine if j not in gone], functions, queues
        )


@duron.effect
async def wait_for_release(i: int) -> int:
    state.seen.append(f"start {i}")
    assert state.release is not None
    await state.release.wait()
    state.ran.append(f"wait {i}")
    return i


@duron.durable
async def step_then_wait(ctx: duron.Context, i: int) -> int:
    await ctx.run(step, i)
    return await ctx.run(wait_for_release, i)


@pytest.mark.anyio
async def test_a_job_claimed_again_while_it_runs_is_run_once_under_the_new_claim(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    global state
    state = State(release=anyio.Event())
    # A long lease: only the test makes it run out.
    store = ClaimsItsOwnJobs(tmp_path / "jobs.db", lease=60)
    await store.submit(step_then_wait.options(job_id="j"), 1)
    async with worker(store, step_then_wait) as w:
        await until(lambda: state.seen == ["start 1"])
        # This process stalled past the lease; the worker's next look for work
        # gets the job it still runs back, under a newer epoch.
        with raw_db(store) as db:
            db.execute("UPDATE jobs SET lease_expires = 0 WHERE id = 'j'")
        await until(lambda: state.seen == ["start 1", "start 1"])
        assert w.running == ["j"]
        assert state.release is not None
        state.release.set()
        assert await store.result("j") == 1
    assert w.running == []
    # The first run was stopped before its effect ended (a write it had in
    # flight is refused); the second ran the effect once and ended the job.
    assert state.ran == ["step 1", "wait 1"]
    info = await store.get("j")
    assert (info.status, info.epoch, info.lease_owner) == ("completed", 2, None)
    kinds = [orjson.loads(e)["type"] async for _, e in store.read_log("j")]
    assert kinds.count("end") == 1
    await store.close()
    assert (
        "duron worker: claimed job j again while an older run of it was still "
        "here; stopping the older run"
    ) in caplog.messages


def test_worker_arguments_are_checked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    with pytest.raises(
        duron.UsageError, match=re.escape("concurrency must be at least 1, not 0")
    ):
        duron.Worker(store, [steps], concurrency=0)
    with pytest.raises(
        duron.UsageError, match=re.escape("Worker runs @duron.durable functions, not")
    ):
        duron.Worker(store, [step])  # type: ignore[list-item]

    @duron.durable(name="steps")
    async def other(ctx: duron.Context) -> None:
        return None

    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "two durable functions are named steps; give one another name with "
            "@duron.durable(name=...)"
        ),
    ):
        duron.Worker(store, [steps, other])


# -- two processes, one killed -----------------------------------------------------------------


def test_two_worker_processes_one_killed_every_job_finishes_exactly_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    side = tmp_path / "side.txt"
    side.touch()
    n_jobs = 200

    async def submit() -> None:
        store = SQLiteStore(db)
        for job in range(n_jobs):
            await store.submit(
                worker_jobs.chain.options(job_id=worker_jobs.job_id(job)), job
            )
        await store.close()

    anyio.run(submit)
    script = str(HERE / "sqlite_jobs.py")
    procs = [
        subprocess.Popen([sys.executable, script, str(db), str(side)]) for _ in range(2)
    ]
    victim, survivor = procs
    try:
        deadline = time.monotonic() + 20
        marker = f" {victim.pid}-"
        while side.read_text().count(marker) < 60:  # the victim is well into its jobs
            assert time.monotonic() < deadline, "the first worker never got going"
            assert victim.poll() is None, "the first worker exited early"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        assert survivor.wait(timeout=25) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()

    runs: dict[tuple[int, int], list[str]] = collections.defaultdict(list)
    for line in side.read_text().splitlines():
        _, job, op, token, _ = line.split()  # run JOB OP TOKEN EPOCH
        runs[int(job), int(op)].append(token)
    with sqlite3.connect(db) as conn:
        jobs = conn.execute("SELECT id, status, result, epoch FROM jobs").fetchall()
        entries = conn.execute(
            "SELECT job_id, entry FROM entries ORDER BY job_id, seq"
        ).fetchall()
    assert len(jobs) == n_jobs
    for job_id, status, result, _ in jobs:
        number = int(job_id.removeprefix("job-"))
        assert (status, orjson.loads(result)) == (
            "completed",
            worker_jobs.expected(number),
        )
    ends: collections.Counter[str] = collections.Counter()
    logged: dict[tuple[int, int], list[str]] = collections.defaultdict(list)
    for job_id, raw in entries:
        e = orjson.loads(raw)
        if e["type"] == "end":
            ends[job_id] += 1
        elif e["type"] == "done":
            logged[int(job_id.removeprefix("job-")), e["id"]].append(e["result"])
    assert set(ends.values()) == {1}
    assert len(ends) == n_jobs
    assert sorted(logged) == sorted(
        (job, op) for job in range(n_jobs) for op in range(worker_jobs.STEPS)
    )
    for key, tokens in logged.items():
        assert len(tokens) == 1, key
        # What ran last is what the log holds: nothing ran after its logged run.
        assert runs[key][-1] == tokens[0], (key, runs[key], tokens)
    # The victim's jobs really were taken over after its lease ran out.
    assert any(epoch >= 2 for *_, epoch in jobs)
    pids = {t.split("-")[0] for tokens in runs.values() for t in tokens}
    assert pids == {str(victim.pid), str(survivor.pid)}


@pytest.mark.anyio
async def test_wait_idle_returns_once_every_job_of_its_functions_ended(
    store: Store,
) -> None:
    async with worker(store, steps) as w:
        ids = [await store.submit(steps, n) for n in (1, 2, 3)]
        await w.wait_idle()
        assert not w.running
        assert [(await store.get(i)).status for i in ids] == ["completed"] * 3
        # A job of a function this worker does not run is not its work.
        await store.submit(unknown)
        await w.wait_idle()
        await w.wait_idle()  # and again, at once: nothing changed


@pytest.mark.anyio
async def test_wait_idle_needs_a_running_worker(store: Store) -> None:
    w = worker(store, steps)
    message = (
        "wait_idle() needs a running worker: call it inside `async with Worker(...)`"
    )
    with pytest.raises(duron.UsageError, match=re.escape(message)):
        await w.wait_idle()
