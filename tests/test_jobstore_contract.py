"""What every SQL job store does, on each of them: submit, get, result, list,
cancel, requeue, fork, prune, the seed way (``fn.invoke(store.log(id))``), leases
and fencing as a caller sees them, and the errors they share.

Each test runs on the SQLite store and, when a server answers, the PostgreSQL
store (the ``backend`` fixture, tests/conftest.py). What only one store does (its
file or schema, its engine's group commit) is tested in that store's own file.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pydantic
import pytest

import duron
from duron._jobstore import fork_prefix

pytestmark = pytest.mark.both_hosts

if TYPE_CHECKING:
    from store_backends import Backend, Store

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
async def store(backend: Backend) -> Store:
    ran.clear()
    return await backend.store()


async def run_here(store: Store, fn: duron.DurableFn[..., Any], job_id: str) -> Any:
    """Run a submitted job in this task, the seed way."""
    async with fn.invoke(store.log(job_id)) as job:
        await job.resume()
        return await job.wait()


def done(i: int, result: object = None) -> bytes:
    return orjson.dumps({"type": "done", "id": i, "t": 1.0, "result": result})


# -- submit ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_records_the_job_and_its_job_entry(store: Store) -> None:
    job_id = await store.submit(checkout.options(job_id="order-42"), 42)
    assert job_id == "order-42"
    info = await store.get("order-42")
    assert (info.id, info.function, info.status, info.args, info.epoch) == (
        "order-42",
        "checkout",
        "pending",
        {"order": 42},
        0,
    )
    assert info.result is None
    assert info.error is None
    assert not info.finished
    assert str(info) == "order-42 pending checkout(order=42)"
    entries = [orjson.loads(e) async for _, e in store.read_log("order-42")]
    assert [(e["type"], e["fn"], e["args"]) for e in entries] == [
        ("job", "checkout", {"order": 42})
    ]


@pytest.mark.anyio
async def test_submit_is_idempotent_by_job_id(store: Store) -> None:
    first = await store.submit(checkout.options(job_id="order-42"), 42)
    again = await store.submit(checkout.options(job_id="order-42"), order=42)
    assert first == again == "order-42"
    assert len([e async for e in store.read_log("order-42")]) == 1
    assert len(await store.list_jobs()) == 1


@pytest.mark.anyio
async def test_submit_with_other_arguments_under_the_same_id_is_refused(
    store: Store,
) -> None:
    await store.submit(checkout.options(job_id="order-42"), 42)
    message = (
        "job order-42 was already submitted as checkout(order=42), not "
        "checkout(order=43): argument 'order' differs (recorded 42, requested 43); "
        "a job id names one call: submit the same arguments to "
        "get the same job, or submit under another id (fn.options(job_id=...))"
    )
    with pytest.raises(duron.DuplicateJobError, match=f"^{re.escape(message)}$"):
        await store.submit(checkout.options(job_id="order-42"), 43)
    with pytest.raises(duron.DuplicateJobError, match=re.escape("not steps(n=42)")):
        await store.submit(steps.options(job_id="order-42"), 42)


@pytest.mark.anyio
async def test_submit_without_an_id_makes_a_fresh_one(store: Store) -> None:
    await store.submit(checkout.options(job_id="order-42"), 42)
    a = await store.submit(checkout, 1)
    b = await store.submit(checkout, 1)
    assert len({a, b, "order-42"}) == 3
    assert [j.id for j in await store.list_jobs()] == ["order-42", a, b]


# pydantic warns while serializing the wrong type, before the codec refuses it.
@pytest.mark.anyio
async def test_submit_checks_arguments_before_storing(store: Store) -> None:
    with pytest.raises(duron.UsageError, match=re.escape("checkout() called with bad")):
        await store.submit(checkout, 1, 2)  # type: ignore[call-arg]
    with pytest.raises(
        duron.PayloadError, match=re.escape("argument 'order' of checkout")
    ):
        await store.submit(checkout, "not a number")  # type: ignore[arg-type]
    with pytest.raises(
        duron.UsageError, match=re.escape("submit() takes a @duron.durable")
    ):
        await store.submit(charge, 1)  # type: ignore[arg-type]
    assert await store.list_jobs() == []


@duron.durable
async def sums(ctx: duron.Context, numbers: list[int]) -> int:
    return sum(numbers)


@pytest.mark.anyio
async def test_an_argument_the_log_cannot_hold_is_refused_before_storing(
    store: Store,
) -> None:
    message = (
        "job big: arguments of sums (job entry): cannot be written to the log: "
        "Integer exceeds 64-bit range"
    )
    with pytest.raises(duron.PayloadError, match=f"^{re.escape(message)}$"):
        await store.submit(sums.options(job_id="big"), [1, 2**70])
    assert await store.list_jobs() == []


# -- call options ---------------------------------------------------------------------


@duron.durable
async def labelled(ctx: duron.Context, job_id: str, n: int = 0) -> str:
    return f"{job_id}:{n}"


@duron.durable
async def anything(ctx: duron.Context, /, **extra: int) -> dict[str, int]:
    return extra


@pytest.mark.anyio
async def test_job_id_is_an_option_of_the_call_not_an_argument(store: Store) -> None:
    message = (
        "durable function checkout has no parameter 'job_id': job_id is an option "
        "of the call, not an argument; pass it on the function: "
        "store.submit(checkout.options(job_id=...), ...)"
    )
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        await store.submit(checkout, 42, job_id="order-42")  # type: ignore[call-arg]
    assert await store.list_jobs() == []
    job_id = await store.submit(checkout.options(job_id="order-42"), order=42)
    assert job_id == "order-42"
    info = await store.get("order-42")
    assert (info.function, info.args) == ("checkout", {"order": 42})


@pytest.mark.anyio
async def test_a_job_id_parameter_of_the_function_is_its_argument(
    store: Store,
) -> None:
    job_id = await store.submit(labelled, job_id="x")
    assert job_id != "x"
    assert (await store.get(job_id)).args == {"job_id": "x"}
    # with an option of the call as well: the two never mix
    again = await store.submit(labelled.options(job_id="the-job"), job_id="x", n=2)
    assert again == "the-job"
    assert (await store.get("the-job")).args == {"job_id": "x", "n": 2}
    assert await run_here(store, labelled, "the-job") == "x:2"
    # a function taking **kwargs takes every keyword
    extra = await store.submit(anything.options(job_id="any"), job_id=7)
    assert (await store.get(extra)).args == {"extra": {"job_id": 7}}


@pytest.mark.anyio
async def test_a_worker_given_fn_runs_jobs_submitted_with_fn_options(
    store: Store,
) -> None:
    a = await store.submit(checkout.options(job_id="a"), 1)
    b = await store.submit(checkout, 2)
    async with duron.Worker(store, [checkout, checkout.options(job_id="c")]):
        assert await store.result(a, checkout) == Receipt(order=1, amount=1.5)
        assert await store.result(b, checkout.options(job_id="x")) == Receipt(
            order=2, amount=3.0
        )


@pytest.mark.anyio
async def test_an_option_with_a_bad_value_is_refused(store: Store) -> None:
    for bad in ("", "x" * 256, 42):
        message = (
            "checkout.options(job_id=...): job_id must be a non-empty string of at "
            f"most 255 characters, not {bad!r}"
        )
        with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
            checkout.options(job_id=bad)  # type: ignore[arg-type]
    assert await store.list_jobs() == []


# -- results --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_result_waits_for_a_job_run_here_and_decodes_by_the_function(
    store: Store,
) -> None:
    await store.submit(checkout.options(job_id="o7"), 7)
    got: list[Receipt] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            got.append(await store.result("o7", checkout))

        tg.start_soon(wait)
        assert await run_here(store, checkout, "o7") == Receipt(order=7, amount=10.5)
    assert got == [Receipt(order=7, amount=10.5)]
    # Without the function: the recorded JSON data.
    assert await store.result("o7") == {"order": 7, "amount": 10.5}
    info = await store.get("o7")
    assert (info.status, info.lease_owner, info.epoch) == ("completed", None, 1)


@pytest.mark.anyio
async def test_result_re_raises_the_job_error(store: Store) -> None:
    await store.submit(broken.options(job_id="b3"), 3)
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


@pytest.mark.anyio
async def test_result_times_out(store: Store) -> None:
    await store.submit(checkout.options(job_id="slow"), 1)
    with pytest.raises(
        TimeoutError,
        match=re.escape("job slow did not finish within 0.05 s (status pending)"),
    ):
        await store.result("slow", timeout=0.05)


@pytest.mark.anyio
async def test_result_with_the_wrong_function_is_refused(store: Store) -> None:
    await store.submit(checkout.options(job_id="c1"), 1)
    await run_here(store, checkout, "c1")
    with pytest.raises(
        duron.UsageError,
        match=re.escape("job c1 ran durable function checkout, not steps; pass the"),
    ):
        await store.result("c1", steps)


# -- the seed way: fn.invoke(store.log(id)) ------------------------------------------


@pytest.mark.anyio
async def test_a_job_run_on_store_log_replays_without_effects(store: Store) -> None:
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


@pytest.mark.anyio
async def test_a_log_opened_but_never_written_leaves_no_job(store: Store) -> None:
    log = store.log("nothing")
    await log.acquire()
    assert (await store.get("nothing")).status == "running"
    await log.release()
    with pytest.raises(duron.JobNotFoundError):
        await store.get("nothing")


# -- leases and fencing ---------------------------------------------------------------


@pytest.mark.anyio
async def test_another_owner_cannot_take_a_live_lease(backend: Backend) -> None:
    a = await backend.store()
    b = await backend.store()
    log = a.log("j")
    await log.acquire()
    try:
        message = (
            f"log j is already open for writing by another job (held by {a.owner}); "
            "a log has one writer at a time: close the other job or wait for it to "
            "finish"
        )
        with pytest.raises(duron.LogLockedError, match=f"^{re.escape(message)}$"):
            await b.log("j").acquire()
    finally:
        await log.release()
    other = b.log("j")
    await other.acquire()  # released: free to take
    await other.release()


@pytest.mark.anyio
async def test_a_writer_whose_lease_was_taken_over_is_fenced(backend: Backend) -> None:
    a = await backend.store(lease=60)
    b = await backend.store(lease=60)
    stale = a.log("j")
    await stale.acquire()
    await stale.append([done(0, 0)])
    # a's process stalls past its lease: it expires, and b takes the job over.
    backend.expire("j")
    fresh = b.log("j")
    await fresh.acquire()
    message = (
        f"job j: lease lost, nothing was written: {b.owner} took the job over "
        "(epoch 2; this writer had 1) after this writer's lease expired"
    )
    with pytest.raises(duron.LeaseLostError, match=f"^{re.escape(message)}$"):
        await stale.append([done(1, "a")])
    await fresh.append([done(1, "b")])
    assert [e async for e in fresh.read()] == [(0, done(0, 0)), (1, done(1, "b"))]
    await fresh.release()
    message = (
        "job j: lease lost, nothing was written: another writer took the job over "
        "(epoch 2; this writer had 1) after this writer's lease expired, and has "
        "since released it (the job is pending)"
    )
    with pytest.raises(duron.LeaseLostError, match=f"^{re.escape(message)}$"):
        await stale.append([done(2)])
    await stale.release()  # harmless: it no longer owns anything
    assert (await b.get("j")).lease_owner is None


@pytest.mark.anyio
async def test_a_writer_whose_expired_lease_was_requeued_is_told_so(
    backend: Backend,
) -> None:
    store = await backend.store(lease=60)
    other = await backend.store(lease=60)
    stale = store.log("j")
    await stale.acquire()
    await stale.append([done(0, 0)])
    backend.expire("j")
    await other.requeue("j")  # nobody took it: its lease is simply given back
    message = (
        "job j: lease lost, nothing was written: this writer's lease was released "
        "(epoch 1); the job is pending"
    )
    with pytest.raises(duron.LeaseLostError, match=f"^{re.escape(message)}$"):
        await stale.append([done(1, "a")])
    await stale.release()


@pytest.mark.anyio
async def test_held_leases_are_renewed(backend: Backend) -> None:
    store = await backend.store(lease=0.6)
    other = await backend.store()
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
    await anyio.sleep(0.7)  # past the first expiry: still held, renewed
    with pytest.raises(duron.LogLockedError):
        await other.log("j").acquire()
    # ... and the writer knows it: its next effect needs no round trip.
    assert log.lease_fresh()
    await log.release()
    assert not log.lease_fresh()


# -- list, cancel, requeue, prune ------------------------------------------------------


@pytest.mark.anyio
async def test_list_jobs_by_status(store: Store) -> None:
    for i in range(4):
        await store.submit(checkout.options(job_id=f"o{i}"), i)
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
            "status must be one of 'pending', 'running', 'suspended', 'completed', "
            "'failed', 'cancelled', not 'done'"
        ),
    ):
        await store.list_jobs(status="done")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_cancel_a_job_that_never_ran(store: Store) -> None:
    await store.submit(checkout.options(job_id="o1"), 1)
    assert await store.cancel("o1") is True
    info = await store.get("o1")
    assert info.status == "cancelled"
    with pytest.raises(
        duron.JobCancelledError, match=r"^job o1 was cancelled before it started$"
    ):
        await store.result("o1")
    assert await store.cancel("o1") is False  # already ended
    await store.submit(checkout.options(job_id="o2"), 2)
    await run_here(store, checkout, "o2")
    assert await store.cancel("o2") is False  # completed: left alone
    assert (await store.get("o2")).status == "completed"


@pytest.mark.anyio
async def test_cancel_a_job_that_ran_is_a_request(store: Store) -> None:
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


@pytest.mark.anyio
async def test_cancel_a_fork_that_never_ran_is_a_request(store: Store) -> None:
    await store.submit(steps.options(job_id="s"), 2)
    await run_here(store, steps, "s")
    await store.fork("s", at=1, new_id="s2")
    # It never ran, but its log holds progress (op 0): only a run can end it.
    assert await store.cancel("s2") is True
    info = await store.get("s2")
    assert (info.status, info.cancel_requested) == ("pending", True)


@pytest.mark.anyio
async def test_requeue(store: Store) -> None:
    await store.submit(checkout.options(job_id="o1"), 1)
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
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        await store.requeue("o1")


@pytest.mark.anyio
async def test_prune_deletes_old_ended_jobs_and_their_logs(
    store: Store, backend: Backend
) -> None:
    for i in range(3):
        await store.submit(checkout.options(job_id=f"o{i}"), i)
    await run_here(store, checkout, "o0")
    await store.cancel("o1")
    assert await store.prune(status="completed", older_than=timedelta(days=1)) == 0
    assert await store.prune(status="completed", older_than=timedelta(0)) == 1
    assert [j.id for j in await store.list_jobs()] == ["o1", "o2"]
    assert await store.prune(older_than=timedelta(0)) == 1  # every ended status
    assert [j.id for j in await store.list_jobs()] == ["o2"]
    assert backend.logged_jobs() == ["o2"]
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "status must be one of 'completed', 'failed', 'cancelled', not 'pending'"
        ),
    ):
        await store.prune(status="pending", older_than=timedelta(0))


# -- fork ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fork_re_runs_from_an_operation(store: Store) -> None:
    await store.submit(steps.options(job_id="s"), 4)
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
    with pytest.raises(
        duron.DuplicateJobError,
        match=re.escape(
            "job s-again was already submitted as another job, not a fork of s at "
            "operation 1"
        ),
    ):
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


# -- errors -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_job_ids(store: Store) -> None:
    message = re.escape(
        f"no job 'nope' in {store.label}; list the store's jobs with "
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


@pytest.mark.anyio
async def test_a_lease_must_be_positive(backend: Backend) -> None:
    with pytest.raises(
        ValueError, match=re.escape("lease must be a number of seconds > 0, not 0")
    ):
        await backend.store(lease=0)


@pytest.mark.anyio
async def test_a_closed_store_says_so(backend: Backend) -> None:
    store = await backend.store()
    await store.list_jobs()
    await store.close()
    message = f"{backend.name} store {store.label}: list failed: the store is closed"
    with pytest.raises(duron.StorageError, match=f"^{re.escape(message)}$") as caught:
        await store.list_jobs()
    # Closed for good: a refusal, not an outage to wait out.
    assert type(caught.value) is duron.StorageError
    assert (caught.value.store, caught.value.operation) == (store.label, "list")


@pytest.mark.anyio
async def test_a_writer_confirms_its_lease_or_learns_it_is_lost(
    backend: Backend,
) -> None:
    store = await backend.store(lease=60)
    log = store.log("j")
    assert not log.lease_fresh()  # not acquired: nothing to vouch for
    await log.acquire()
    assert log.lease_fresh()
    backend.expire("j")  # the database's clock ran past it; nobody took it
    await log.confirm_lease()  # still this writer's: renewed for a full lease
    info = await store.get("j")
    assert info.lease_expires is not None
    assert info.lease_expires > datetime.now(timezone.utc) + timedelta(seconds=50)
    backend.take_over("j")
    message = (
        "job j: lease lost, nothing was written: other:1:0 took the job over "
        "(epoch 2; this writer had 1) after this writer's lease expired"
    )
    with pytest.raises(duron.LeaseLostError, match=f"^{re.escape(message)}$"):
        await log.confirm_lease()
    await log.release()
    with pytest.raises(
        duron.LeaseLostError,
        match=r"^job j: lease lost, nothing was written: this writer no longer "
        r"holds the job's lease$",
    ):
        await log.confirm_lease()
