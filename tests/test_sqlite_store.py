"""What only the SQLite job store does: its engine's group commit, the file it
opens (and what it says of one that is not a store), its options. What every SQL
store does is in test_jobstore_contract.py."""

from __future__ import annotations

import re
import sqlite3
import threading
from typing import TYPE_CHECKING

import anyio
import orjson
import pytest

import duron
from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "jobs.db")
    yield s
    await s.close()


def raw_db(store: SQLiteStore) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


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
        tg.start_soon(lambda: store._engine.call(hold, op="test"))
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
        tg.start_soon(lambda: store._engine.call(lambda conn: gate.wait(10), op="test"))
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


# -- the file and the options ------------------------------------------------------------------


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
            "knows up to 4): upgrade duron",
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
    for durability, level in (("flush", 1), ("fsync", 2)):
        store = SQLiteStore(tmp_path / "a.db", durability=durability)  # type: ignore[arg-type]
        got = await store._engine.call(
            lambda conn: (
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA journal_mode").fetchone()[0],
            ),
            op="test",
            write=False,
        )
        assert got == (level, "wal")
        await store.close()
