"""Storage errors carry their facts, and each store tells an outage (try again)
from a refusal once, where the driver's error comes in."""

from __future__ import annotations

import logging
import pickle
import re
import sqlite3
from typing import TYPE_CHECKING

import pytest

import duron
from duron._outage import Outage, backoff
from duron.contrib._sqlite_engine import is_passing as sqlite_passing

if TYPE_CHECKING:
    from pathlib import Path


def test_a_storage_error_is_built_from_its_facts() -> None:
    error = duron.StorageError(
        kind="SQLite store",
        store="/var/lib/app/jobs.db",
        operation="append",
        detail="database disk image is malformed",
        job="order-42",
    )
    assert str(error) == (
        "SQLite store /var/lib/app/jobs.db: append of job order-42 failed: database "
        "disk image is malformed"
    )
    assert (error.kind, error.store, error.operation, error.detail, error.job) == (
        "SQLite store",
        "/var/lib/app/jobs.db",
        "append",
        "database disk image is malformed",
        "order-42",
    )
    plain = duron.StorageError(store="kv://logs", operation="read", detail="gone")
    assert str(plain) == "store kv://logs: read failed: gone"


def test_an_unavailable_store_is_a_storage_error_that_says_to_try_again() -> None:
    error = duron.StoreUnavailableError(
        kind="PostgreSQL store",
        store="postgresql://app@db.internal:5432/app",
        operation="heartbeat",
        detail="terminating connection due to administrator command",
    )
    assert isinstance(error, duron.StorageError)
    assert str(error) == (
        "PostgreSQL store postgresql://app@db.internal:5432/app is unavailable right "
        "now: heartbeat failed: terminating connection due to administrator "
        "command; try again once it is back"
    )
    assert duron.StoreUnavailableError in vars(duron).values()


def test_the_older_storage_errors_keep_their_messages_and_gain_the_facts() -> None:
    locked = duron.LogLockedError(job="order-1", holder="host:1:ab")
    assert str(locked) == (
        "log order-1 is already open for writing by another job (held by "
        "host:1:ab); a log has one writer at a time: close the other job or wait "
        "for it to finish"
    )
    assert (locked.job, locked.holder, locked.operation) == (
        "order-1",
        "host:1:ab",
        "acquire",
    )
    lost = duron.LeaseLostError(job="order-2", detail="other:1:0 took the job over")
    assert str(lost) == (
        "job order-2: lease lost, nothing was written: other:1:0 took the job over"
    )
    assert (lost.job, lost.detail, lost.operation) == (
        "order-2",
        "other:1:0 took the job over",
        "append",
    )
    schema = duron.SchemaError(store="jobs.db", detail="not a Duron store")
    assert str(schema) == "jobs.db: not a Duron store"
    assert (schema.store, schema.detail) == ("jobs.db", "not a Duron store")
    for error in (locked, lost, schema):
        assert isinstance(error, duron.StorageError)
        assert not isinstance(error, duron.StoreUnavailableError)


def test_an_effect_s_storage_error_is_its_failure_not_the_store_s() -> None:
    """An effect that raised StoreUnavailableError (from a store of its own) is
    recorded as the effect's failure: rebuilt from the log it is an EffectError,
    so a worker never mistakes it for its own store being away."""
    from duron._recorded_errors import error_info, rebuild

    raised = duron.StoreUnavailableError(store="other", operation="read", detail="x")
    rebuilt = rebuild(error_info(raised))
    assert type(rebuilt) is duron.EffectError
    assert str(rebuilt) == (
        "duron._errors.StoreUnavailableError: store other is unavailable right now: "
        "read failed: x; try again once it is back"
    )
    assert pickle.loads(pickle.dumps(rebuilt)).message == rebuilt.message


# -- SQLite ------------------------------------------------------------------------------------


def _error(run: object) -> sqlite3.Error:
    assert callable(run)
    with pytest.raises(sqlite3.Error) as caught:
        run()
    return caught.value


def test_sqlite_errors_that_pass_and_errors_that_do_not(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    a = sqlite3.connect(path, isolation_level=None, timeout=0)
    a.execute("PRAGMA journal_mode = WAL")
    a.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, 'x')")
    b = sqlite3.connect(path, isolation_level=None, timeout=0)
    b.execute("BEGIN IMMEDIATE")
    locked = _error(lambda: a.execute("BEGIN IMMEDIATE"))
    b.execute("ROLLBACK")
    a.execute("PRAGMA query_only = 1")
    read_only = _error(lambda: a.execute("INSERT INTO t VALUES (2, 'y')"))
    a.execute("PRAGMA query_only = 0")
    a.execute("PRAGMA max_page_count = 1")
    full = _error(lambda: a.execute("INSERT INTO t VALUES (3, ?)", ("z" * 20_000,)))
    duplicate = _error(lambda: a.execute("INSERT INTO t VALUES (1, 'again')"))
    syntax = _error(lambda: a.execute("SELEC 1"))
    (tmp_path / "junk.db").write_bytes(b"not a database, not at all" * 200)
    junk = sqlite3.connect(tmp_path / "junk.db")
    not_a_db = _error(lambda: junk.execute("SELECT * FROM sqlite_master"))
    a.close()
    b.close()
    junk.close()

    assert [str(e) for e in (locked, read_only, full)] == [
        "database is locked",
        "attempt to write a readonly database",
        "database or disk is full",
    ]
    assert all(sqlite_passing(e) for e in (locked, read_only, full))
    assert not any(sqlite_passing(e) for e in (duplicate, syntax, not_a_db))


def test_sqlite_errors_are_judged_by_message_without_error_codes() -> None:
    """Python 3.10's sqlite3 has no ``sqlite_errorcode``: the message decides."""
    assert sqlite_passing(sqlite3.OperationalError("database is locked"))
    assert sqlite_passing(sqlite3.OperationalError("database or disk is full"))
    assert not sqlite_passing(sqlite3.IntegrityError("UNIQUE constraint failed: t.k"))


# -- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_errors_that_pass_and_errors_that_do_not() -> None:
    psycopg = pytest.importorskip("psycopg")
    from duron.contrib._postgres_pool import is_passing

    e = psycopg.errors
    passing = [
        e.AdminShutdown("terminating connection due to administrator command"),
        e.CrashShutdown("terminating connection because of crash of another process"),
        e.CannotConnectNow("the database system is starting up"),
        e.IdleSessionTimeout("terminating connection due to idle-session timeout"),
        e.ConnectionFailure("connection failure"),
        e.SqlclientUnableToEstablishSqlconnection("could not connect"),
        e.TooManyConnections("sorry, too many clients already"),
        e.DiskFull("could not extend file: No space left on device"),
        e.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        e.DeadlockDetected("deadlock detected"),
        # psycopg's own, without a SQLSTATE: refused, reset, closed, timed out.
        psycopg.OperationalError("connection failed: Connection refused"),
        psycopg.OperationalError("the connection is closed"),
    ]
    refused = [
        e.UniqueViolation("duplicate key value violates unique constraint"),
        e.UndefinedTable('relation "duron.jobs" does not exist'),
        e.SyntaxError("syntax error at or near"),
        e.DatabaseDropped("database is being dropped"),  # not coming back
        e.SerializationFailure("could not serialize access"),
        e.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.ProgrammingError("the query has 2 placeholders but 1 parameters"),
        psycopg.InterfaceError("unexpected"),
        ValueError("not psycopg's"),
    ]
    assert [type(x).__name__ for x in passing if not is_passing(x)] == []
    assert [type(x).__name__ for x in refused if is_passing(x)] == []


def test_the_postgres_store_translates_an_error_once_without_the_password() -> None:
    psycopg = pytest.importorskip("psycopg")
    from duron.contrib.storage import PostgresStore

    store = PostgresStore("postgresql://app:s3cr3t-pw@db.internal:6432/app")
    engine = store._engine
    shutdown = psycopg.errors.AdminShutdown(
        "terminating connection due to administrator command"
    )
    error = engine._translate(shutdown, "append", "order-7")
    assert type(error) is duron.StoreUnavailableError
    assert str(error) == (
        "PostgreSQL store postgresql://app@db.internal:6432/app is unavailable right "
        "now: append of job order-7 failed: terminating connection due to "
        "administrator command; try again once it is back"
    )
    assert error.__cause__ is shutdown
    duplicate = psycopg.errors.UniqueViolation("duplicate key value")
    refused = engine._translate(duplicate, "fork", "order-7")
    assert type(refused) is duron.StorageError
    assert str(refused) == (
        "PostgreSQL store postgresql://app@db.internal:6432/app: fork of job order-7 "
        "failed: duplicate key value"
    )
    missing = engine._translate(psycopg.errors.UndefinedTable("no"), "claim")
    assert type(missing) is duron.SchemaError
    assert "s3cr3t" not in str(error) + str(refused) + str(missing)


# -- the outage log ----------------------------------------------------------------------------


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="duron")
    outage = Outage("SQLite store jobs.db")
    outage.recovered()  # nothing to end
    assert not outage.active
    for op in ("append", "claim", "heartbeat"):
        outage.failed(
            duron.StoreUnavailableError(
                kind="SQLite store",
                store="jobs.db",
                operation=op,
                detail="database is locked",
                job="j1" if op == "append" else None,
            )
        )
    assert outage.active
    outage.recovered()
    outage.recovered()
    assert (outage.active, outage.count) == (False, 1)
    assert outage.error is not None
    assert outage.error.operation == "append"
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records[0] == (
        "WARNING",
        "duron: SQLite store jobs.db is unavailable (append of job j1 failed: "
        "database is locked); retrying with backoff, jobs stop at a safe point and "
        "resume from their logs once it is back",
    )
    assert records[1][0] == "INFO"
    assert re.fullmatch(
        r"duron: SQLite store jobs.db is reachable again after \d+\.\d s", records[1][1]
    )
    assert len(records) == 2
    assert all(r.exc_info is None for r in caplog.records)


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (10, 5.0)):
        delays = [backoff(attempt, 0.1, 5.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(set(delays)) > 100  # jitter: clients do not come back in step
    assert backoff(10_000, 0.1, 5.0) <= 5.0
