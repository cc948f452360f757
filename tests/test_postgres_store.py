"""What only the PostgreSQL job store does: the epoch each entry records, row locks
(a takeover racing an append, claims that skip locked rows), its group commit, the
schema and its migrations, the connection string and server errors, the optional
driver, and the CLI. What every SQL store does is in test_jobstore_contract.py."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import orjson
import pydantic
import pytest

import duron
from duron._cli import main
from duron.contrib.storage import PostgresStore

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import (
    dsn,
    requires_postgres,
    schema_name,
    sql,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = [requires_postgres, pytest.mark.both_hosts]


class Receipt(pydantic.BaseModel):
    order: int
    amount: float


@duron.effect
async def charge(order: int) -> Receipt:
    return Receipt(order=order, amount=order * 1.5)


@duron.durable
async def checkout(ctx: duron.Context, order: int) -> Receipt:
    return await ctx.run(charge, order)


@pytest.fixture
def schema() -> Iterator[str]:
    with schema_name() as name:
        yield name


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(dsn(), schema=schema)
    assert await s.migrate() == [1, 2, 3, 4]
    yield s
    await s.close()


def label(schema: str) -> str:
    """What messages call the test store: its URL, without the password."""
    store = PostgresStore(dsn(), schema=schema)
    return store.label


def done(i: int, result: object = None) -> bytes:
    return orjson.dumps({"type": "done", "id": i, "t": 1.0, "result": result})


class RowLock:
    """Holds a job row ``FOR UPDATE`` from another connection until released:
    an append to that job (so the store's flusher) waits behind it."""

    def __init__(self, schema: str, job_id: str) -> None:
        import psycopg

        self._conn = psycopg.connect(dsn())
        self._conn.execute(
            f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE'.encode(),
            (job_id,),
        )

    def release(self) -> None:
        self._conn.rollback()
        self._conn.close()


# -- leases and fencing -----------------------------------------------------------------


@pytest.mark.anyio
async def test_every_entry_records_the_epoch_that_wrote_it(schema: str) -> None:
    a = PostgresStore(dsn(), schema=schema, lease=60)
    await a.migrate()
    b = PostgresStore(dsn(), schema=schema, lease=60)
    stale = a.log("j")
    await stale.acquire()
    await stale.append([done(0, 0)])
    # a's process stalls past its lease: it expires, and b takes the job over.
    sql(
        f"UPDATE \"{schema}\".jobs SET lease_expires = now() - interval '1 second' "
        "WHERE id = 'j'"
    )
    fresh = b.log("j")
    await fresh.acquire()
    with pytest.raises(duron.LeaseLostError):
        await stale.append([done(1, "a")])
    await fresh.append([done(1, "b")])
    assert sql(f'SELECT seq, epoch FROM "{schema}".entries ORDER BY seq') == [
        (0, 1),
        (1, 2),
    ]
    await fresh.release()
    await stale.release()
    await a.close()
    await b.close()


@pytest.mark.anyio
async def test_an_append_racing_a_takeover_is_refused_or_seen(schema: str) -> None:
    """The takeover and the stale append meet on the row lock: whichever commits
    second sees the other, so the stale entry is either refused or in the log
    before the new owner reads it."""
    a = PostgresStore(dsn(), schema=schema, lease=60)
    await a.migrate()
    b = PostgresStore(dsn(), schema=schema, lease=60)
    stale = a.log("j")
    await stale.acquire()
    sql(
        f"UPDATE \"{schema}\".jobs SET lease_expires = now() - interval '1 second' "
        "WHERE id = 'j'"
    )
    lock = RowLock(schema, "j")  # both now wait on the row
    outcome: list[str] = []

    async def append() -> None:
        try:
            await stale.append([done(0, "stale")])
            outcome.append("written")
        except duron.LeaseLostError:
            outcome.append("refused")

    fresh = b.log("j")
    async with anyio.create_task_group() as tg:
        tg.start_soon(append)
        tg.start_soon(fresh.acquire)
        await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(lock.release)
    seen = [e async for e in fresh.read()]
    if outcome == ["written"]:
        assert seen == [(0, done(0, "stale"))]
    else:
        assert (outcome, seen) == (["refused"], [])
    await fresh.append([done(9)])  # at the seq after what it saw: no conflict
    await fresh.release()
    await a.close()
    await b.close()


@pytest.mark.anyio
async def test_claims_skip_locked_rows_and_never_share_a_job(schema: str) -> None:
    a = PostgresStore(dsn(), schema=schema)
    await a.migrate()
    b = PostgresStore(dsn(), schema=schema)
    for i in range(10):
        await a.submit(checkout.options(job_id=f"o{i}"), i)
    lock = RowLock(schema, "o0")
    try:
        with anyio.fail_after(5):  # does not wait for the locked row
            first = await a.claim(4)
    finally:
        lock.release()
    assert [c.job_id for c in first] == ["o1", "o2", "o3", "o4"]
    assert {c.epoch for c in first} == {1}
    second = await b.claim(10)
    assert [c.job_id for c in second] == ["o0", "o5", "o6", "o7", "o8", "o9"]
    assert await a.claim(10) == []  # every lease is live
    info = await a.get("o3")
    assert (info.status, info.lease_owner) == ("running", a.owner)
    beat = await b.heartbeat(["o0", "o5"])
    assert (beat.lost, beat.cancel) == (frozenset(), frozenset())
    await a.close()
    await b.close()


# -- group commit -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_appends_of_many_jobs_share_one_statement(
    store: PostgresStore, schema: str
) -> None:
    blocker = store.log("blocker")
    await blocker.acquire()
    logs = [store.log(f"j{i}") for i in range(20)]
    for log in logs:
        await log.acquire()
    lock = RowLock(schema, "blocker")
    before = store.flushes
    async with anyio.create_task_group() as tg:
        # The flusher waits on the locked row: every append queues behind it.
        tg.start_soon(blocker.append, [done(0)])
        await anyio.sleep(0.1)
        for i, log in enumerate(logs):
            tg.start_soon(log.append, [done(0, i), done(1, i)])
        await anyio.sleep(0.1)
        await anyio.to_thread.run_sync(lock.release)
    assert store.flushes - before == 2  # the blocker's, then all 20 jobs'
    assert store._engine.stats.largest_batch == 20
    for i, log in enumerate(logs):
        assert [e async for e in log.read()] == [(0, done(0, i)), (1, done(1, i))]
        await log.release()
    await blocker.release()


@pytest.mark.anyio
async def test_a_refused_append_does_not_undo_the_others_in_its_statement(
    store: PostgresStore, schema: str
) -> None:
    blocker, good, bad = store.log("blocker"), store.log("good"), store.log("bad")
    for log in (blocker, good, bad):
        await log.acquire()
    sql(f"UPDATE \"{schema}\".jobs SET lease_owner = 'x', epoch = 9 WHERE id = 'bad'")
    lock = RowLock(schema, "blocker")
    results: dict[str, str] = {}

    async def append(name: str, log: duron.LogStorage) -> None:
        try:
            await log.append([done(0)])
            results[name] = "ok"
        except duron.LeaseLostError as exc:
            results[name] = str(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(append, "blocker", blocker)
        await anyio.sleep(0.1)
        tg.start_soon(append, "bad", bad)
        tg.start_soon(append, "good", good)
        await anyio.sleep(0.1)
        await anyio.to_thread.run_sync(lock.release)
    assert results == {
        "blocker": "ok",
        "good": "ok",
        "bad": "job bad: lease lost, nothing was written: x took the job over "
        "(epoch 9; this writer had 1) after this writer's lease expired",
    }
    assert store._engine.stats.largest_batch == 2
    assert len([e async for e in good.read()]) == 1
    assert [e async for e in bad.read()] == []
    for log in (blocker, good, bad):
        await log.release()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_missing_schema_says_to_migrate(schema: str) -> None:
    store = PostgresStore(dsn(), schema=schema)
    message = (
        f"{store.label}: no Duron schema {schema!r} in this database; create it "
        "with `duron db migrate URL` or `await store.migrate()`"
    )
    with pytest.raises(duron.SchemaError, match=f"^{re.escape(message)}$"):
        await store.list_jobs()
    with pytest.raises(duron.SchemaError, match=f"^{re.escape(message)}$"):
        await store.submit(checkout, 1)  # and again: nothing was opened
    assert await store.migrate() == [1, 2, 3, 4]
    assert await store.list_jobs() == []
    assert await store.migrate() == []  # up to date
    await store.close()


@pytest.mark.anyio
async def test_a_schema_from_a_newer_duron_is_refused(schema: str) -> None:
    store = PostgresStore(dsn(), schema=schema)
    await store.migrate()
    await store.close()
    sql(f'INSERT INTO "{schema}".schema_version (version) VALUES (5), (7)')
    store = PostgresStore(dsn(), schema=schema)
    message = (
        f"{store.label}: written by a newer Duron (store schema version 7, this "
        "Duron knows up to 4): upgrade duron"
    )
    with pytest.raises(duron.SchemaError, match=f"^{re.escape(message)}$"):
        await store.get("x")
    with pytest.raises(duron.SchemaError, match=f"^{re.escape(message)}$"):
        await store.migrate()
    await store.close()


@pytest.mark.anyio
async def test_an_unreachable_server() -> None:
    import psycopg

    store = PostgresStore(
        "postgresql://someone:secret@127.0.0.1:1/nowhere", connect_timeout=2
    )
    assert store.label == "postgresql://someone@127.0.0.1:1/nowhere"
    refused = (
        'connection failed: connection to server at "127.0.0.1", port 1 failed: '
        "Connection refused Is the server running on that host and accepting "
        "TCP/IP connections?"
    )
    # A server that never answered is reported at once (no waiting out the
    # connect timeout), as one that may come back: try again.
    for op, call in (("list", store.list_jobs), ("migrate", store.migrate)):
        message = (
            "PostgreSQL store postgresql://someone@127.0.0.1:1/nowhere is "
            f"unavailable right now: {op} failed: {refused}; try again once it is "
            "back"
        )
        started = time.monotonic()
        with pytest.raises(
            duron.StoreUnavailableError, match=f"^{re.escape(message)}$"
        ) as caught:
            await call()
        assert time.monotonic() - started < 1.5
        assert caught.value.store == "postgresql://someone@127.0.0.1:1/nowhere"
        assert caught.value.operation == op
        assert "secret" not in str(caught.value)
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    await store.close()
    with pytest.raises(
        duron.StorageError,
        match=re.escape(
            "PostgreSQL store postgresql://someone@127.0.0.1:1/nowhere: list "
            "failed: the store is closed"
        ),
    ):
        await store.list_jobs()


def test_bad_arguments() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "'host=db password=*** port' is not a PostgreSQL connection string "
            '(missing "=" after "port" in connection info string); '
            "write postgresql://user:password@host:5432/dbname"
        ),
    ):
        PostgresStore("host=db password=secret port")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "schema must be a plain PostgreSQL identifier (letters, digits and _, "
            "not starting with a digit, at most 63 characters), not 'my-jobs'"
        ),
    ):
        PostgresStore(dsn(), schema="my-jobs")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "pool_size must be at least 2 (appends and the other requests run side "
            "by side), not 1"
        ),
    ):
        PostgresStore(dsn(), pool_size=1)


def test_import_duron_never_imports_psycopg_and_a_missing_driver_says_what_to_install() -> (
    None
):
    code = (
        "import sys\n"
        "import duron, duron.contrib.storage, duron._cli.db\n"
        "assert not [m for m in sys.modules if 'psycopg' in m], 'psycopg imported'\n"
        "sys.modules['psycopg'] = None  # as if the extra were not installed\n"
        "from duron.contrib.storage import PostgresStore\n"
        "try:\n"
        "    PostgresStore('postgresql://localhost/x')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout == (
        "PostgreSQL storage needs psycopg 3: pip install 'duron[postgres]'\n"
    )


# -- the command line -------------------------------------------------------------------------


def test_db_migrate_and_jobs_list_from_the_command_line(
    schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{dsn()}?schema={schema}"
    shown = label(schema)
    assert main(["jobs", "list", url]) == 2
    assert capsys.readouterr().err == (
        f"duron jobs: error: {shown}: no Duron schema {schema!r} in this database; "
        "create it with `duron db migrate URL` or `await store.migrate()`\n"
    )
    assert main(["db", "migrate", url]) == 0
    assert capsys.readouterr().out == (
        f"{shown}: schema {schema} migrated to version 4 (applied 1, 2, 3, 4)\n"
    )
    assert main(["db", "migrate", url]) == 0
    assert capsys.readouterr().out == (
        f"{shown}: schema {schema} is up to date (version 4)\n"
    )

    async def submit() -> None:
        async with PostgresStore(dsn(), schema=schema) as store:
            await store.submit(checkout.options(job_id="order-5"), 5)

    anyio.run(submit)
    assert main(["jobs", "list", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "UPDATED", "CALL"]
    assert lines[1].split()[:2] == ["order-5", "pending"]
    assert lines[1].endswith("checkout(order=5)")
    assert main(["jobs", "cancel", url, "order-5"]) == 0
    assert capsys.readouterr().out == "job order-5 cancelled\n"

    assert main(["db", "migrate", "sqlite:///jobs.db"]) == 2
    assert capsys.readouterr().err == (
        "duron db: error: 'sqlite:///jobs.db': a SQLite store creates its tables "
        "when the application first opens it; `duron db migrate` is for PostgreSQL "
        "stores\n"
    )
    assert main(["db", "migrate", "postgresql://x@127.0.0.1:1/db"]) == 2
    assert capsys.readouterr().err.startswith(
        "duron db: error: PostgreSQL store postgresql://x@127.0.0.1:1/db is "
        "unavailable right now: migrate failed: connection failed: "
    )
    assert main(["jobs", "list", "postgresql://x/db?schema=no-no"]) == 2
    assert capsys.readouterr().err == (
        "duron jobs: error: schema must be a plain PostgreSQL identifier (letters, "
        "digits and _, not starting with a digit, at most 63 characters), not "
        "'no-no'\n"
    )
