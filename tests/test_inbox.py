"""Input and output by job id through a store, on every SQL store: the inbox.

``store.open_stream(job_id, name, "w")``, ``store.complete_future`` and
``store.is_future_pending`` store input for a job from any process; the job's run
records each item once, with its ``seq``; ``store.open_stream(job_id, name, "r")``
reads what the job sent, from any position, following it live. What can be
refused at send time is refused with a message that says which.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pydantic
import pytest
from inbox_jobs import collect

import duron
from duron.contrib._sqlite_engine import SCHEMA_VERSION

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

if TYPE_CHECKING:
    from store_backends import Backend, Store


class Vote(pydantic.BaseModel):
    who: str
    yes: bool


@duron.durable
async def tally(
    ctx: duron.Context,
    votes: duron.Stream[Vote] = duron.Provided,
    stop: duron.Signal[str] = duron.Provided,
    progress: duron.StreamWriter[int] = duron.Provided,
) -> dict[str, Any]:
    yes = 0
    try:
        async with stop:
            async for vote in votes:
                yes += vote.yes
                await progress.send(yes)
    except duron.SignalInterrupt as interrupt:
        return {"yes": yes, "stopped": interrupt.value}
    fid, fut = await ctx.create_future(int, name="weight")
    weight = await fut
    return {"yes": yes * weight, "future": fid}


async def entries(store: Store, job_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) async for _, raw in store.read_log(job_id)]


async def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def test_input_sent_before_the_job_runs_is_recorded_once_when_it_runs(
    backend: Backend,
) -> None:
    store = await backend.store()
    job_id = await store.submit(tally.options(job_id="t1"))
    votes = await store.open_stream(job_id, "votes", "w")
    await votes.send(Vote(who="ada", yes=True))
    await votes.send({"who": "bob", "yes": True})  # validated into a Vote
    await votes.send(Vote(who="cy", yes=False))
    await votes.close()
    async with duron.Worker(store, [tally]):

        async def waiting() -> bool:
            return await store.is_future_pending(job_id, "2")

        await wait_until(waiting, "the future")
        assert not await store.is_future_pending(job_id, "1")  # a signal
        await store.complete_future(job_id, "2", result=5)
        assert await store.result(job_id) == {"yes": 10, "future": "2"}
    log = await entries(store, job_id)
    recorded = [(e["type"], e.get("value"), e.get("seq")) for e in log if "seq" in e]
    assert recorded == [
        ("emit", {"who": "ada", "yes": True}, 1),
        ("emit", {"who": "bob", "yes": True}, 2),
        ("emit", {"who": "cy", "yes": False}, 3),
        ("done", None, 4),
        ("done", None, 5),
    ]
    assert [e["result"] for e in log if e.get("seq") == 5] == [5]
    progress = await store.open_stream(job_id, "progress", "r")
    assert [v async for v in progress] == [1, 2, 2]
    assert progress.position == 3
    later = await store.open_stream(job_id, "progress", "r", start=2)
    assert [v async for v in later] == [2]


async def test_input_reaches_a_job_run_the_seed_way(backend: Backend) -> None:
    store = await backend.store()
    async with tally.invoke(store.log("seed")) as job:
        await job.start()
        signal = await store.open_stream("seed", "stop", "w")
        votes = await store.open_stream("seed", "votes", "w")
        await votes.send(Vote(who="ada", yes=True))
        reader = await store.open_stream("seed", "progress", "r")
        assert await reader.__anext__() == 1  # recorded, then sent back out
        await signal.send("enough")
        assert await job.wait() == {"yes": 1, "stopped": "enough"}


async def test_the_output_of_a_running_job_is_followed_live(backend: Backend) -> None:
    store = await backend.store()
    job_id = await store.submit(tally.options(job_id="live"))
    seen: list[int] = []
    async with duron.Worker(store, [tally]):
        votes = await store.open_stream(job_id, "votes", "w")
        reader = await store.open_stream(job_id, "progress", "r")
        for n in range(1, 4):
            await votes.send(Vote(who=f"v{n}", yes=True))
            seen.append(await reader.__anext__())
        await votes.close()
        await wait_until(lambda: store.is_future_pending(job_id, "2"), "the future")
        await store.complete_future(job_id, "2", exception=ValueError("no weight"))
        with pytest.raises(ValueError, match=r"^no weight$"):
            await store.result(job_id)
        assert [v async for v in reader] == []  # the job ended: iteration stops
    assert seen == [1, 2, 3]
    not_following = await store.open_stream(job_id, "progress", "r", follow=False)
    assert [v async for v in not_following] == [1, 2, 3]


async def test_refusals_say_which(backend: Backend) -> None:
    store = await backend.store()
    job_id = await store.submit(tally.options(job_id="r1"))
    label = store.label

    async def refused(call: Any, error: type[Exception], message: str) -> None:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            await call

    await refused(
        store.open_stream("nope", "votes", "w"),
        duron.JobNotFoundError,
        f"no job 'nope' in {label}; list the store's jobs with store.list_jobs() "
        "or `duron jobs list`",
    )
    await refused(
        store.open_stream(job_id, "ballots", "w"),
        duron.UsageError,
        "durable function tally has no provided parameter 'ballots' (provided "
        "parameters: progress, stop, votes)",
    )
    await refused(
        store.open_stream(job_id, "progress", "w"),
        duron.UsageError,
        "'progress' is a StreamWriter the durable code writes to; read it: "
        "open_stream(job_id, 'progress', 'r')",
    )
    await refused(
        store.open_stream(job_id, "votes", "r"),
        duron.UsageError,
        "'votes' is a stream the durable code reads; write it: "
        "open_stream(job_id, 'votes', 'w')",
    )
    votes = await store.open_stream(job_id, "votes", "w")
    with pytest.raises(duron.PayloadEncodeError) as info:
        await votes.send({"who": "ada"})
    assert str(info.value).startswith(
        "value sent to 'votes' of job r1 (Vote): cannot encode dict: "
    )
    assert "yes" in str(info.value)
    await refused(
        store.complete_future(job_id, "x1"),
        duron.UsageError,
        "job r1: 'x1' is not a future id (ctx.create_future returns one, such as '3')",
    )
    await votes.close()
    await refused(
        votes.send(Vote(who="late", yes=True)),
        duron.UsageError,
        "job r1: 'votes' is closed; it takes no more values",
    )
    await refused(
        votes.close(),
        duron.UsageError,
        "job r1: 'votes' is closed; it takes no more values",
    )
    async with duron.Worker(store, [tally]):
        await wait_until(lambda: store.is_future_pending(job_id, "2"), "the future")
    # The worker stopped: the job waits (pending) for its future.
    await refused(
        store.complete_future(job_id, "0", result=1),
        duron.UsageError,
        "job r1: operation #0 is input 'votes', not a future",
    )
    await store.complete_future(job_id, "2", result=2)
    assert not await store.is_future_pending(job_id, "2")  # its result is stored
    await refused(
        store.complete_future(job_id, "2", result=2),
        duron.UsageError,
        "job r1: future 2 was already completed",
    )
    async with duron.Worker(store, [tally]):
        assert await store.result(job_id) == {"yes": 0, "future": "2"}
    assert not await store.is_future_pending(job_id, "2")
    await refused(
        store.complete_future(job_id, "2", result=2),
        duron.UsageError,
        "job r1 ended (completed); it takes no more input",
    )
    await refused(
        (await store.open_stream(job_id, "stop", "w")).send("x"),
        duron.UsageError,
        "job r1 ended (completed); it takes no more input",
    )


async def test_a_function_not_known_in_this_process_is_named(
    backend: Backend,
) -> None:
    store = await backend.store()
    ghost = duron.durable(name="ghost")(tally.fn)
    ghost.module = "no_such_module_here"  # as if defined where this process is not
    job_id = await store.submit(ghost)
    with pytest.raises(duron.UsageError) as info:
        await store.open_stream(job_id, "votes", "w")
    assert str(info.value) == (
        f"cannot check input for job {job_id}: its durable function ghost is not "
        "known in this process (importing module 'no_such_module_here' failed: "
        "ModuleNotFoundError: No module named 'no_such_module_here'); pass the "
        "function (fn=...), or import the module that defines it first (duron "
        "jobs: --import MODULE)"
    )
    await (await store.open_stream(job_id, "votes", "w", fn=ghost)).close()
    # Future results need no types: they are sent all the same.
    await store.complete_future(job_id, "2", result=1)


async def test_fn_must_be_the_function_the_job_runs(backend: Backend) -> None:
    store = await backend.store()
    # A job whose entry names a module that does not exist here.
    async with tally.invoke(store.log("elsewhere")) as job:
        await job.start()
        await job.close()
    raw = next(iter([raw async for _, raw in store.read_log("elsewhere")]))
    assert b'"module":"test_inbox"' in raw
    other = duron.durable(name="tally")(tally.fn)
    with pytest.raises(
        duron.UsageError,
        match=r"^job elsewhere runs durable function tally, not collect; pass the "
        r"function that runs it$",
    ):
        await store.open_stream("elsewhere", "votes", "w", fn=collect)
    writer = await store.open_stream("elsewhere", "votes", "w", fn=other)
    await writer.send(Vote(who="ada", yes=True))


async def test_a_log_opened_and_not_started_takes_no_input(backend: Backend) -> None:
    store = await backend.store()
    async with tally.invoke(store.log("empty")):
        with pytest.raises(
            duron.UsageError,
            match=r"^job empty has no job entry yet \(its log was opened and not "
            r"started; status running\): its parameters are not known$",
        ):
            await store.open_stream("empty", "votes", "w")


async def test_a_future_result_that_does_not_validate_fails_the_future(
    backend: Backend,
) -> None:
    store = await backend.store()
    job_id = await store.submit(tally.options(job_id="bad"))
    await (await store.open_stream(job_id, "votes", "w")).close()
    async with duron.Worker(store, [tally]):
        await wait_until(lambda: store.is_future_pending(job_id, "2"), "the future")
        await store.complete_future(job_id, "2", result="heavy")
        with pytest.raises(duron.EffectError):
            await store.result(job_id)
    error = (await store.get(job_id)).error
    assert error is not None
    assert error.type == "duron._errors.PayloadEncodeError"
    assert error.message == (
        "job bad: result for future '2' (weight) (int): does not validate: Input "
        "should be a valid integer, unable to parse string as an integer"
    )


async def test_a_store_file_of_schema_version_1_gets_its_inbox(tmp_path: Any) -> None:
    import sqlite3

    from duron.contrib._sqlite_engine import APPLICATION_ID
    from duron.contrib.storage import SQLiteStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as db:  # as Duron 0.1 made it
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, function TEXT, args "
            "TEXT, status TEXT NOT NULL, result TEXT, error TEXT, created REAL NOT "
            "NULL, updated REAL NOT NULL, lease_owner TEXT, lease_expires REAL, "
            "epoch INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL "
            "DEFAULT 0, forked_from TEXT) STRICT"
        )
        db.execute(
            "CREATE TABLE entries (job_id TEXT NOT NULL, seq INTEGER NOT NULL, entry "
            "TEXT NOT NULL, PRIMARY KEY (job_id, seq)) STRICT, WITHOUT ROWID"
        )
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
    store = SQLiteStore(path, create=False)
    job_id = await store.submit(tally.options(job_id="old"))
    await (await store.open_stream(job_id, "stop", "w")).send("now")
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT seq, kind, target, data FROM inbox").fetchall() == [
            (1, "value", "stop", '"now"')
        ]
