"""The SQLite job store: submit, result, list, cancel, fork, prune, leases, errors."""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pydantic
import pytest

import duron
from duron._jobstore import fork_prefix
from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

ran: list[str] = []


class Receipt(pydantic.BaseModel):
    order: int
    amount: float


@duron.effect
async def charge(order: int) -> Receipt:
    ran.append(f"charge {order}")
    return Receipt(order=order, amount=order * 1.5)


@duron.effect
async def step(i: int) -> int:
    ran.append(f"step {i}")
    return i * 10


@duron.durable
async def checkout(ctx: duron.Context, order: int) -> Receipt:
    return await ctx.run(charge, order)


@duron.durable
async def steps(ctx: duron.Context, n: int) -> list[int]:
    return [await ctx.run(step, i) for i in range(n)]


@duron.effect
async def forever() -> None:
    await anyio.sleep_forever()


@duron.durable
async def waits(ctx: duron.Context) -> None:
    await ctx.run(step, 0)
    await ctx.run(forever)


@duron.durable
async def broken(ctx: duron.Context, order: int) -> int:
    raise ValueError(f"order {order} is broken")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    ran.clear()
    s = SQLiteStore(tmp_path / "jobs.db")
    yield s
    await s.close()


async def run_here(
    store: SQLiteStore, fn: duron.DurableFn[..., Any], job_id: str
) -> Any:
    """Run a submitted job in this task, the seed way."""
    async with fn.invoke(store.log(job_id)) as job:
        await job.resume()
        return await job.wait()


def raw_db(store: SQLiteStore) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


# -- submit --------------------------------------------------------------------------


async def test_submit_records_the_job_and_its_job_entry(store: SQLiteStore) -> None:
    job_id = await store.submit(checkout, 42, job_id="order-42")
    assert job_id == "order-42"
    info = await store.get("order-42")
    assert (info.id, info.function, info.status, info.args) == (
        "order-42",
        "checkout",
        "pending",
        {"order": 42},
    )
    assert info.result is None
    assert info.error is None
    assert info.epoch == 0
    assert not info.finished
    assert str(info) == "order-42 pending checkout(order=42)"
    entries = [orjson.loads(e) async for _, e in store.read_log("order-42")]
    assert len(entries) == 1
    assert entries[0]["type"] == "job"
    assert entries[0]["fn"] == "checkout"
    assert entries[0]["args"] == {"order": 42}


async def test_submit_is_idempotent_by_job_id(store: SQLiteStore) -> None:
    first = await store.submit(checkout, 42, job_id="order-42")
    again = await store.submit(checkout, order=42, job_id="order-42")
    assert first == again == "order-42"
    assert len([e async for e in store.read_log("order-42")]) == 1
    assert len(await store.list_jobs()) == 1


async def test_submit_with_other_arguments_under_the_same_id_is_refused(
    store: SQLiteStore,
) -> None:
    await store.submit(checkout, 42, job_id="order-42")
    message = (
        "job order-42 was already submitted as checkout(order=42), not "
        "checkout(order=43); a job id names one call: submit the same arguments to "
        "get the same job, or use another job_id"
    )
    with pytest.raises(duron.DuplicateJobError, match=re.escape(message)):
        await store.submit(checkout, 43, job_id="order-42")
    with pytest.raises(duron.DuplicateJobError, match=re.escape("not steps(n=42)")):
        await store.submit(steps, 42, job_id="order-42")


async def test_submit_without_an_id_makes_a_fresh_one(store: SQLiteStore) -> None:
    a = await store.submit(checkout, 1)
    b = await store.submit(checkout, 1)
    assert a != b
    assert [j.id for j in await store.list_jobs()] == [a, b]


# pydantic warns while serializing the wrong type, before the codec refuses it.
async def test_submit_checks_arguments_before_storing(store: SQLiteStore) -> None:
    with pytest.raises(duron.UsageError, match=re.escape("checkout() called with bad")):
        await store.submit(checkout, 1, 2)
    with pytest.raises(
        duron.PayloadError, match=re.escape("argument 'order' of checkout")
    ):
        await store.submit(checkout, "not a number")
    with pytest.raises(
        duron.UsageError, match=re.escape("submit() takes a @duron.durable")
    ):
        await store.submit(charge, 1)  # type: ignore[arg-type]
    assert await store.list_jobs() == []


# -- results --------------------------------------------------------------------------


async def test_result_waits_for_a_job_run_here_and_decodes_by_the_function(
    store: SQLiteStore,
) -> None:
    await store.submit(checkout, 7, job_id="o7")
    async with anyio.create_task_group() as tg:
        got: list[Receipt] = []

        async def wait() -> None:
            got.append(await store.result("o7", checkout))

        tg.start_soon(wait)
        assert await run_here(store, checkout, "o7") == Receipt(order=7, amount=10.5)
    assert got == [Receipt(order=7, amount=10.5)]
    # Without the function: the recorded JSON data.
    assert await store.result("o7") == {"order": 7, "amount": 10.5}
    info = await store.get("o7")
    assert info.status == "completed"
    assert info.lease_owner is None


async def test_result_re_raises_the_job_error(store: SQLiteStore) -> None:
    await store.submit(broken, 3, job_id="b3")
    with pytest.raises(ValueError, match=r"^order 3 is broken$"):
        await run_here(store, broken, "b3")
    with pytest.raises(ValueError, match=r"^order 3 is broken$"):
        await store.result("b3")
    info = await store.get("b3")
    assert info.status == "failed"
    assert info.error is not None
    assert (info.error.type, info.error.message) == (
        "builtins.ValueError",
        "order 3 is broken",
    )


async def test_result_times_out(store: SQLiteStore) -> None:
    await store.submit(checkout, 1, job_id="slow")
    with pytest.raises(
        TimeoutError,
        match=re.escape("job slow did not finish within 0.05 s (status pending)"),
    ):
        await store.result("slow", timeout=0.05)


async def test_result_with_the_wrong_function_is_refused(store: SQLiteStore) -> None:
    await store.submit(checkout, 1, job_id="c1")
    await run_here(store, checkout, "c1")
    with pytest.raises(
        duron.UsageError,
        match=re.escape("job c1 ran durable function checkout, not steps; pass the"),
    ):
        await store.result("c1", steps)


# -- the seed way: fn.invoke(store.log(id)) ------------------------------------------------


async def test_a_job_run_on_store_log_replays_without_effects(
    store: SQLiteStore,
) -> None:
    async with steps.invoke(store.log("s")) as job:
        await job.start(3)
        assert await job.wait() == [0, 10, 20]
    assert ran == ["step 0", "step 1", "step 2"]
    info = await store.get("s")
    assert (info.function, info.args, info.status, info.result) == (
        "steps",
        {"n": 3},
        "completed",
        [0, 10, 20],
    )
    async with steps.invoke(store.log("s")) as job:
        await job.resume()
        assert await job.wait() == [0, 10, 20]
    assert ran == ["step 0", "step 1", "step 2"]
    # Replaying a finished job leaves it finished.
    assert (await store.get("s")).status == "completed"


async def test_a_log_opened_but_never_written_leaves_no_job(store: SQLiteStore) -> None:
    log = store.log("nothing")
    await log.acquire()
    assert (await store.get("nothing")).status == "running"
    await log.release()
    with pytest.raises(duron.JobNotFoundError):
        await store.get("nothing")


async def test_another_owner_cannot_take_a_live_lease(tmp_path: Path) -> None:
    a = SQLiteStore(tmp_path / "jobs.db")
    b = SQLiteStore(tmp_path / "jobs.db")
    log = a.log("j")
    await log.acquire()
    try:
        message = (
            f"log j is already open for writing by another job (held by {a.owner}); "
            "a log has one writer at a time"
        )
        with pytest.raises(duron.LogLockedError, match=re.escape(message)):
            await b.log("j").acquire()
    finally:
        await log.release()
    other = b.log("j")
    await other.acquire()  # released: free to take
    await other.release()
    await a.close()
    await b.close()


async def test_a_writer_whose_lease_was_taken_over_is_fenced(tmp_path: Path) -> None:
    a = SQLiteStore(tmp_path / "jobs.db", lease=60)
    b = SQLiteStore(tmp_path / "jobs.db", lease=60)
    stale = a.log("j")
    await stale.acquire()
    await stale.append([b'{"type":"done","id":0,"t":1.0,"result":0}'])
    # a's process stalls past its lease: it expires, and b takes the job over.
    with raw_db(a) as db:
        db.execute("UPDATE jobs SET lease_expires = 0 WHERE id = 'j'")
    fresh = b.log("j")
    await fresh.acquire()
    message = (
        f"job j: lease lost, nothing was written: {b.owner} took the job over "
        "(epoch 2; this writer had 1) after this writer's lease expired"
    )
    with pytest.raises(duron.LeaseLostError, match=re.escape(message)):
        await stale.append([b'{"type":"done","id":1,"t":1.0,"result":1}'])
    await fresh.append([b'{"type":"done","id":1,"t":1.0,"result":"b"}'])
    assert [e async for e in fresh.read()] == [
        (0, b'{"type":"done","id":0,"t":1.0,"result":0}'),
        (1, b'{"type":"done","id":1,"t":1.0,"result":"b"}'),
    ]
    await fresh.release()
    await stale.release()  # harmless: it no longer owns anything
    assert (await b.get("j")).lease_owner is None
    await a.close()
    await b.close()


async def test_held_leases_are_renewed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db", lease=0.3)
    log = store.log("j")
    await log.acquire()
    first = await store.get("j")
    assert first.lease_expires is not None
    for _ in range(100):
        await anyio.sleep(0.05)
        now = await store.get("j")
        assert now.lease_expires is not None
        if now.lease_expires > first.lease_expires:
            break
    else:
        pytest.fail("the lease was never renewed")
    other = SQLiteStore(tmp_path / "jobs.db")
    await anyio.sleep(0.4)  # past the first expiry: still held, renewed
    with pytest.raises(duron.LogLockedError):
        await other.log("j").acquire()
    await log.release()
    await store.close()
    await other.close()


# -- group commit ---------------------------------------------------------------------------


async def test_concurrent_appends_share_one_transaction(store: SQLiteStore) -> None:
    logs = [store.log(f"j{i}") for i in range(20)]
    for log in logs:
        await log.acquire()
    gate = threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        gate.wait(10)

    before = store.transactions
    async with anyio.create_task_group() as tg:
        # The DB thread is busy: every append queues up behind this request.
        tg.start_soon(lambda: store._engine.call(hold))
        await anyio.sleep(0.05)
        for i, log in enumerate(logs):
            tg.start_soon(log.append, [orjson.dumps({"type": "done", "id": i, "t": 1})])
        await anyio.sleep(0.05)
        gate.set()
    assert store.transactions - before == 2  # the holder's, then all 20 appends
    assert store._engine.stats.largest_batch == 20
    for log in logs:
        assert len([e async for e in log.read()]) == 1
        await log.release()


async def test_a_refused_append_does_not_undo_the_others_in_its_batch(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db", lease=60)
    good, bad = store.log("good"), store.log("bad")
    await good.acquire()
    await bad.acquire()
    with raw_db(store) as db:  # someone else took "bad" over
        db.execute("UPDATE jobs SET lease_owner = 'x', epoch = 9 WHERE id = 'bad'")
    gate = threading.Event()
    results: dict[str, str] = {}

    async def append(name: str, log: duron.LogStorage) -> None:
        try:
            await log.append([b'{"type":"done","id":0,"t":1,"result":0}'])
            results[name] = "ok"
        except duron.LeaseLostError:
            results[name] = "lost"

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: store._engine.call(lambda conn: gate.wait(10)))
        await anyio.sleep(0.05)
        tg.start_soon(append, "bad", bad)
        tg.start_soon(append, "good", good)
        await anyio.sleep(0.05)
        gate.set()
    assert results == {"bad": "lost", "good": "ok"}
    assert len([e async for e in good.read()]) == 1
    assert [e async for e in bad.read()] == []
    await good.release()
    await bad.release()
    await store.close()


# -- list, cancel, requeue, prune ---------------------------------------------------------


async def test_list_jobs_by_status(store: SQLiteStore) -> None:
    for i in range(4):
        await store.submit(checkout, i, job_id=f"o{i}")
    await run_here(store, checkout, "o1")
    await run_here(store, checkout, "o3")
    assert [j.id for j in await store.list_jobs(status="completed")] == ["o1", "o3"]
    assert [j.id for j in await store.list_jobs(status="pending")] == ["o0", "o2"]
    assert [j.id for j in await store.list_jobs(["pending", "completed"], limit=3)] == [
        "o0",
        "o1",
        "o2",
    ]
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "status must be one of 'pending', 'running', 'completed', 'failed', "
            "'cancelled', not 'done'"
        ),
    ):
        await store.list_jobs(status="done")  # type: ignore[arg-type]


async def test_cancel_a_job_that_never_ran(store: SQLiteStore) -> None:
    await store.submit(checkout, 1, job_id="o1")
    assert await store.cancel("o1") is True
    info = await store.get("o1")
    assert info.status == "cancelled"
    with pytest.raises(
        duron.JobCancelledError, match=r"^job o1 was cancelled before it started$"
    ):
        await store.result("o1")
    assert await store.cancel("o1") is False  # already ended


async def test_cancel_a_job_that_ran_is_a_request(store: SQLiteStore) -> None:
    async with waits.invoke(store.log("w")) as job:
        await job.start()
        with anyio.fail_after(5):
            while len([e async for e in store.read_log("w")]) < 2:
                await anyio.sleep(0.01)
    # Stopped at a safe point with progress in its log: whoever runs it next
    # delivers the cancellation (see the worker tests).
    assert await store.cancel("w") is True
    info = await store.get("w")
    assert (info.status, info.cancel_requested) == ("pending", True)


async def test_requeue(store: SQLiteStore) -> None:
    await store.submit(checkout, 1, job_id="o1")
    await store.fail(
        "o1", 0, duron.UnknownFunctionError(job="o1", function="checkout", known=())
    )
    info = await store.get("o1")
    assert info.status == "failed"
    await store.requeue("o1")
    info = await store.get("o1")
    assert (info.status, info.error) == ("pending", None)
    await run_here(store, checkout, "o1")
    message = (
        "job o1 ended (completed): it cannot run again; fork it to re-run it from a "
        "step (store.fork / `duron jobs fork`)"
    )
    with pytest.raises(duron.UsageError, match=re.escape(message)):
        await store.requeue("o1")


async def test_prune_deletes_old_ended_jobs_and_their_logs(store: SQLiteStore) -> None:
    for i in range(3):
        await store.submit(checkout, i, job_id=f"o{i}")
    await run_here(store, checkout, "o0")
    await store.cancel("o1")
    assert await store.prune(status="completed", older_than=timedelta(days=1)) == 0
    assert await store.prune(status="completed", older_than=timedelta(0)) == 1
    assert [j.id for j in await store.list_jobs()] == ["o1", "o2"]
    assert await store.prune(older_than=timedelta(0)) == 1  # every ended status
    assert [j.id for j in await store.list_jobs()] == ["o2"]
    with raw_db(store) as db:
        assert db.execute("SELECT DISTINCT job_id FROM entries").fetchall() == [("o2",)]
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "status must be one of 'completed', 'failed', 'cancelled', not 'pending'"
        ),
    ):
        await store.prune(status="pending", older_than=timedelta(0))


# -- fork ------------------------------------------------------------------------------------


async def test_fork_re_runs_from_an_operation(store: SQLiteStore) -> None:
    await store.submit(steps, 4, job_id="s")
    assert await run_here(store, steps, "s") == [0, 10, 20, 30]
    ran.clear()
    new_id = await store.fork("s", at=2, new_id="s-again")
    assert new_id == "s-again"
    info = await store.get("s-again")
    assert (info.status, info.function, info.args, info.forked_from) == (
        "pending",
        "steps",
        {"n": 4},
        "s",
    )
    kinds = [orjson.loads(e)["type"] async for _, e in store.read_log("s-again")]
    assert kinds == ["job", "done", "done"]
    assert await run_here(store, steps, "s-again") == [0, 10, 20, 30]
    assert ran == ["step 2", "step 3"]  # ops 0 and 1 replayed
    ran.clear()
    whole = await store.fork("s", at=0)
    assert await run_here(store, steps, whole) == [0, 10, 20, 30]
    assert ran == ["step 0", "step 1", "step 2", "step 3"]
    with pytest.raises(duron.DuplicateJobError, match=re.escape("job s-again was")):
        await store.fork("s", at=1, new_id="s-again")
    with pytest.raises(
        duron.UsageError,
        match=re.escape("fork(at=...) takes an operation number >= 0, not -1"),
    ):
        await store.fork("s", at=-1)


def test_fork_prefix_stops_at_the_first_entry_of_the_operation() -> None:
    job = b'{"type":"job","version":1,"fn":"f","args":{},"seed":"s","t":0}'
    log = [
        job,
        b'{"type":"start","id":0,"t":1,"kind":"effect","name":"a"}',
        b'{"type":"start","id":1,"t":1,"kind":"effect","name":"b"}',
        b'{"type":"done","id":1,"t":2,"result":1}',
        b'{"type":"done","id":2,"t":3,"kind":"effect","name":"c","result":2}',
        b'{"type":"done","id":0,"t":4,"result":0}',
        b'{"type":"end","t":5,"result":null}',
    ]
    rows = list(enumerate(log))
    assert fork_prefix(rows, "j", 0) == [job]
    assert fork_prefix(rows, "j", 1) == log[:2]
    # Op 0 was still running when op 2 began: it runs again in the fork.
    assert fork_prefix(rows, "j", 2) == log[:4]
    assert fork_prefix(rows, "j", 3) == log[:6]
    assert fork_prefix(rows, "j", 99) == log[:6]  # never the end


# -- errors ----------------------------------------------------------------------------------


async def test_unknown_job_ids(store: SQLiteStore) -> None:
    message = re.escape(
        f"no job 'nope' in {store.path}; list the store's jobs with "
        "store.list_jobs() or `duron jobs list`"
    )
    with pytest.raises(duron.JobNotFoundError, match=message):
        await store.get("nope")
    with pytest.raises(duron.JobNotFoundError, match=message):
        await store.result("nope")
    with pytest.raises(duron.JobNotFoundError, match=message):
        await store.cancel("nope")
    with pytest.raises(duron.JobNotFoundError, match=message):
        await store.fork("nope", at=0)
    with pytest.raises(duron.JobNotFoundError, match=message):
        await store.requeue("nope")
    with pytest.raises(duron.JobNotFoundError, match=message):
        [e async for e in store.read_log("nope")]


async def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("PRAGMA application_id = 1234")
        db.execute("CREATE TABLE x (y)")
    newer = tmp_path / "newer.db"
    s = SQLiteStore(newer)
    await s.list_jobs()
    await s.close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    cases = [
        (text, "not a Duron store: not a SQLite database (file is not a database)"),
        (
            other,
            "not a Duron store: a SQLite database with other tables; keep "
            "Duron's jobs in a file of their own",
        ),
        (
            foreign,
            "not a Duron store: a SQLite database of another application "
            "(application_id 0x4d2)",
        ),
        (
            newer,
            "written by a newer Duron (store schema version 99, this Duron "
            "knows up to 1): upgrade duron",
        ),
        (
            tmp_path / "missing.db",
            "no such file; a store is created by "
            "SQLiteStore(path) in the application that submits jobs",
        ),
    ]
    for path, detail in cases:
        store = SQLiteStore(path, create=path != tmp_path / "missing.db")
        with pytest.raises(duron.SchemaError, match=re.escape(f"{path}: {detail}")):
            await store.list_jobs()
        await store.close()
    assert not (tmp_path / "missing.db").exists()


async def test_options(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=re.escape("durability must be 'flush' or 'fsync', not 'x'")
    ):
        SQLiteStore(tmp_path / "a.db", durability="x")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=re.escape("lease must be a number of seconds > 0, not 0")
    ):
        SQLiteStore(tmp_path / "a.db", lease=0)
    for durability, level in (("flush", 1), ("fsync", 2)):
        store = SQLiteStore(tmp_path / "a.db", durability=durability)  # type: ignore[arg-type]
        got = await store._engine.call(
            lambda conn: (
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA journal_mode").fetchone()[0],
            ),
            write=False,
        )
        assert got == (level, "wal")
        await store.close()
    closed = SQLiteStore(tmp_path / "a.db")
    await closed.close()
    with pytest.raises(
        duron.StorageError, match=re.escape(f"SQLite store {closed.path} is closed")
    ):
        await closed.list_jobs()
