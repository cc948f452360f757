"""The SQLite store's engine: one connection, one thread, one transaction per batch.

Every call from async code becomes a request on a queue. A dedicated thread owns the
connection; it takes every request waiting in the queue, runs them all in one
transaction (each inside its own savepoint, so one refused request does not undo
the others) and commits once. That is the group commit: the entries many jobs
produce in one scheduler step share one commit and, in the ``fsync`` mode, one
fsync. Requests queue up while the thread waits for the disk, so the busier the
store, the bigger the batches.

The thread wakes the waiting tasks through their event loop's thread-safe
``call_soon`` (asyncio) or ``run_sync_soon`` (trio), once per loop per batch.

While a running job waits for input (its inbox feed), the thread also looks at
``PRAGMA data_version`` every :data:`INBOX_POLL` seconds: it changes when another
connection (another process) committed; the thread then reads the newest inbox
item of each waiting job and rings the feeds of the jobs that got one. Input
stored through this store object rings its job's feed at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import orjson

from duron._errors import (
    DuronError,
    InternalError,
    SchemaError,
    StorageError,
    StoreUnavailableError,
)
from duron._outage import Outage
from duron.contrib._lease_times import LeaseTimes
from duron.contrib._wakeups import Request, Watchers, host_waiter

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Engine"]

_R = TypeVar("_R")
_log = logging.getLogger("duron")

APPLICATION_ID = 0x4475726E  # "Durn": marks the file as a Duron store
SCHEMA_VERSION = 5

INBOX_POLL = 0.01
"""Seconds between two looks for other processes' commits while input is awaited."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    function TEXT,
    args TEXT,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    lease_owner TEXT,
    lease_expires REAL,
    epoch INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    forked_from TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (created)
    WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS jobs_lease_owner ON jobs (lease_owner)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, updated);
CREATE TABLE IF NOT EXISTS entries (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;
"""

# Indexes change no table: a store of this schema version works with or without
# them (only slower), so a store made before they existed gets them when an
# application opens it (SQLiteStore(path), not the CLI), with no version change.
# For the job list (by creation time, of a function or a status) and for claims
# of a worker's own functions.
_INDEXES = {
    "jobs_created": "jobs (created, id)",
    "jobs_function": "jobs (function, created, id)",
    "jobs_status_created": "jobs (status, created, id)",
    "jobs_runnable_function": "jobs (function, created) "
    "WHERE status IN ('pending', 'running')",
}

# Each migration takes the schema from version N-1 to N (a new file gets them all).
_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE jobs ADD COLUMN inbox_seq INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS inbox (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    data TEXT,
    error TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;
""",
    # Suspended jobs (waiting on durable things only, holding no worker) and
    # when their timer wakes them.
    3: """
ALTER TABLE jobs ADD COLUMN wake_at REAL;
CREATE INDEX IF NOT EXISTS jobs_waking ON jobs (wake_at) WHERE status = 'suspended';
""",
    # Child jobs: the job that started one, and the future there that its end
    # completes, through the parent's inbox, in the transaction that ends it.
    # Cancel requests now travel through the inbox: pending ones move there.
    4: """
UPDATE jobs SET inbox_seq = inbox_seq + 1
    WHERE cancel_requested = 1 AND status NOT IN ('completed', 'failed', 'cancelled');
INSERT INTO inbox (job_id, seq, kind, target, data, error, created)
    SELECT id, inbox_seq, 'cancel', '', NULL, NULL, updated FROM jobs
    WHERE cancel_requested = 1 AND status NOT IN ('completed', 'failed', 'cancelled');
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
ALTER TABLE jobs ADD COLUMN parent_future TEXT;
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS jobs_child_ended AFTER UPDATE OF status ON jobs
WHEN NEW.parent_id IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled')
    AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE jobs SET inbox_seq = inbox_seq + 1,
        status = CASE status WHEN 'suspended' THEN 'pending' ELSE status END,
        wake_at = CASE status WHEN 'suspended' THEN NULL ELSE wake_at END
        WHERE id = NEW.parent_id;
    INSERT INTO inbox (job_id, seq, kind, target, data, error, created)
        SELECT NEW.parent_id, inbox_seq, 'future', NEW.parent_future,
            CASE NEW.status WHEN 'completed' THEN NEW.result END,
            CASE NEW.status
                WHEN 'completed' THEN NULL
                WHEN 'cancelled' THEN json_object(
                    'type', 'duron._errors.JobCancelledError',
                    'message', 'child job ' || NEW.id || ' was cancelled',
                    'args', json_array('child job ' || NEW.id || ' was cancelled'))
                ELSE NEW.error END,
            (julianday('now') - 2440587.5) * 86400.0
        FROM jobs WHERE id = NEW.parent_id;
END;
""",
    # Queues (a job's queue and priority, when it first started, a queue's
    # limits) and schedules. A pending job with a wake_at starts at that time.
    5: """
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN started REAL;
CREATE INDEX IF NOT EXISTS jobs_queue_runnable ON jobs (queue, priority DESC, created, id)
    WHERE status IN ('pending', 'running', 'suspended');
CREATE INDEX IF NOT EXISTS jobs_queue_running ON jobs (queue) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_queue_started ON jobs (queue, started)
    WHERE started IS NOT NULL;
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY NOT NULL,
    concurrency INTEGER,
    rate_starts INTEGER,
    rate_per REAL,
    updated REAL NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY NOT NULL,
    function TEXT NOT NULL,
    args TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    missed TEXT NOT NULL,
    grace REAL NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_tick REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_at) WHERE paused = 0;
""",
}


_STORE = "SQLite store"

# SQLite's result codes for a database that is there but cannot be used right now:
# busy or locked by another connection beyond the busy timeout, read-only, an I/O
# error, a full disk, a file that cannot be opened (yet), a locking protocol race.
_PASSING_CODES = frozenset({5, 6, 8, 10, 13, 14, 15})
# The same by message, for Python 3.10 (no ``sqlite_errorcode``).
_PASSING_MESSAGES = (
    "database is locked",
    "database table is locked",
    "attempt to write a readonly database",
    "disk I/O error",
    "database or disk is full",
    "unable to open database file",
    "locking protocol",
)


def _ensure_indexes(conn: sqlite3.Connection) -> None:
    """Create the indexes of :data:`_INDEXES` a store made before them lacks."""
    marks = ", ".join("?" * len(_INDEXES))
    (count,) = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN ({marks})",
        list(_INDEXES),
    ).fetchone()
    if count == len(_INDEXES):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, on in _INDEXES.items():
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def is_passing(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error means "not now" rather than "never": another try,
    once the lock, the disk or the permissions are back, may succeed."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _PASSING_CODES
    return str(exc).startswith(_PASSING_MESSAGES)


@dataclass(slots=True, eq=False, kw_only=True)
class _Request(Request):
    fn: Callable[[sqlite3.Connection], Any]
    write: bool
    op: str


@dataclass(slots=True, eq=False)
class _Look:
    """What the DB thread last saw of the inboxes of the jobs waiting for input."""

    version: int | None = None  # PRAGMA data_version
    commits: int = 0  # this connection's own write commits (data_version skips them)
    queried: set[str] = field(default_factory=set)  # the jobs it looked at
    newest: dict[str, int] = field(default_factory=dict)  # job -> newest item


@dataclass(slots=True, eq=False)
class _Stats:
    transactions: int = 0
    requests: int = 0
    largest_batch: int = 0


@dataclass(eq=False)
class Engine:
    """The connection, its thread and the request queue of one store object."""

    path: str
    label: str
    synchronous: str
    busy_timeout: float
    create: bool
    owner: str
    lease_seconds: float
    outage: Outage
    held: dict[str, int] = field(default_factory=dict)
    stats: _Stats = field(default_factory=_Stats)

    def __post_init__(self) -> None:
        self._queue: queue.SimpleQueue[_Request | str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._watchers = Watchers(_STORE, self._poke)
        self._closed = False
        self.leases = LeaseTimes(self.lease_seconds)

    @property
    def watchers(self) -> Watchers:
        """The tasks waiting on this store (inbox feeds ring and wait here)."""
        return self._watchers

    def _poke(self) -> None:
        """A feed waits for input: make the thread start watching other writers."""
        with self._lock:
            if not self._closed and self._thread is not None:
                self._queue.put(_POKE)

    # -- async side -------------------------------------------------------------

    async def call(
        self,
        fn: Callable[[sqlite3.Connection], _R],
        *,
        op: str,
        write: bool = True,
        signal: int = 0,
        job: str | None = None,
    ) -> _R:
        """Run ``fn(conn)`` on the DB thread (inside the batch's transaction if
        ``write``) and return its result once committed. ``op`` names the
        operation in errors.

        The request is queued before the first await, so a caller cancelled while
        waiting does not unqueue it: it still runs, like a write already handed to
        the OS.
        """
        call, event = host_waiter(_STORE)
        req = _Request(
            call=call,
            event=event,
            signal=signal,
            job=job,
            fn=fn,
            write=write,
            op=op,
        )
        self._put(req)
        result: _R = await req.answer()
        return result

    def _put(self, req: _Request) -> None:
        with self._lock:
            if self._closed:
                raise StorageError(
                    kind=_STORE,
                    store=self.label,
                    operation=req.op,
                    detail="the store is closed",
                    job=req.job,
                )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name=f"duron sqlite {self.label}", daemon=True
                )
                self._thread.start()
            self._queue.put(req)

    async def wait_signal(
        self, mask: int, timeout: float, job: str | None = None
    ) -> None:
        """Return when a committed batch carries ``mask`` (for ``job``), or timeout."""
        await self._watchers.wait(mask, timeout, job)

    def stop(self) -> threading.Thread | None:
        """Stop the thread once the queued requests ran; later calls fail."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
            return thread

    async def close(self) -> None:
        thread = self.stop()
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join)

    # -- the DB thread ------------------------------------------------------------

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        renew_every = self.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        q = self._queue
        watchers = self._watchers
        look = _Look()
        try:
            while True:
                timeout = max(0.0, next_renew - time.monotonic()) if self.held else None
                if watchers.inbox_waiting:
                    timeout = (
                        INBOX_POLL if timeout is None else min(timeout, INBOX_POLL)
                    )
                batch: list[_Request] = []
                stop = False
                try:
                    first = q.get(timeout=timeout)
                except queue.Empty:
                    pass  # time to renew the leases, or to look for input
                else:
                    if first is None:
                        stop = True
                    elif first is not _POKE:
                        batch.append(first)  # type: ignore[arg-type]
                while not q.empty():  # this thread is the only reader
                    more = q.get_nowait()
                    if more is None:
                        stop = True
                    elif more is not _POKE:
                        batch.append(more)  # type: ignore[arg-type]
                if conn is not None and watchers.inbox_waiting:
                    self._look_for_input(conn, look)
                renew = bool(self.held) and time.monotonic() >= next_renew
                if batch or renew:
                    if conn is None:
                        try:
                            conn = self._connect()
                        except DuronError as exc:
                            if isinstance(exc, StoreUnavailableError):
                                self.outage.failed(exc)
                            for req in batch:
                                req.error = exc
                            self._wake(batch)
                            if stop:
                                return
                            continue
                    try:
                        self._execute(conn, batch, renew)
                    except (
                        Exception
                    ) as exc:  # a bug: answer, never leave callers hanging
                        _log.exception("duron: SQLite store %s failed", self.label)
                        error = InternalError(
                            f"SQLite store {self.label} failed: {exc!r}"
                        )
                        error.__cause__ = exc
                        for req in batch:
                            if req.error is None:
                                req.error = error
                        with contextlib.suppress(sqlite3.Error):
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                    if renew:
                        next_renew = time.monotonic() + renew_every
                    self._wake(batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _look_for_input(self, conn: sqlite3.Connection, look: _Look) -> None:
        """Ring the feeds of the waiting jobs whose newest inbox item changed
        since the last look (or that were not waiting then and have items), when
        another connection committed since (the database's ``data_version``) or
        a feed started waiting."""
        try:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            jobs = self._watchers.inbox_jobs()
            commits = self.stats.transactions
            if (
                version == look.version
                and commits == look.commits
                and look.queried.issuperset(jobs)
            ):
                return
            look.commits = commits
            rows = conn.execute(
                "SELECT job_id, max(seq) FROM inbox WHERE job_id IN "
                "(SELECT value FROM json_each(?)) GROUP BY job_id",
                (orjson.dumps(jobs).decode(),),
            ).fetchall()
        except sqlite3.Error:
            return  # the next request reports what is wrong
        now = {job: int(seq) for job, seq in rows}
        rung = [
            job
            for job, seq in now.items()
            if job not in look.queried or look.newest.get(job) != seq
        ]
        look.version, look.queried, look.newest = version, set(jobs), now
        if rung:
            self._watchers.ring(rung)

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        if not self.create and not os.path.exists(path):
            raise SchemaError(
                store=self.label,
                detail="no such file; a store is created by SQLiteStore(path) in "
                "the application that submits jobs",
            )
        try:
            conn = sqlite3.connect(
                path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        label = self.label
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise SchemaError(
                store=label,
                detail=f"not a Duron store: not a SQLite database ({exc})",
            ) from exc
        try:
            if app_id == 0 and version == 0:
                self._create(conn)
            elif app_id != APPLICATION_ID:
                raise SchemaError(
                    store=label,
                    detail=f"not a Duron store: a SQLite database of another "
                    f"application (application_id {app_id:#x})",
                )
            elif version > SCHEMA_VERSION:
                raise SchemaError(
                    store=label,
                    detail=f"written by a newer Duron (store schema version "
                    f"{version}, this Duron knows up to {SCHEMA_VERSION}): "
                    "upgrade duron",
                )
            elif version < SCHEMA_VERSION:
                self._migrate(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if self.create:
                _ensure_indexes(conn)
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from exc

    def _create(self, conn: sqlite3.Connection) -> None:
        label = self.label
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchone()[0]
        if tables:
            raise SchemaError(
                store=label,
                detail="not a Duron store: a SQLite database with other tables; "
                "keep Duron's jobs in a file of their own",
            )
        if not self.create:
            raise SchemaError(
                store=label,
                detail="not a Duron store: an empty SQLite database; a store is "
                "created by SQLiteStore(path) in the application that submits jobs",
            )
        # WAL must be chosen outside a transaction; it sticks to the file.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(
                kind=_STORE,
                store=label,
                operation="open",
                detail=f"cannot use write-ahead logging (journal mode stays "
                f"{mode!r}); put the store on a local file system",
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it while we waited for the lock.
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                _apply_migrations(conn, 1)
                for name, on in _INDEXES.items():
                    conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a store written by an older Duron up to :data:`SCHEMA_VERSION`."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated it while we waited for the lock.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            _apply_migrations(conn, version)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _execute(
        self, conn: sqlite3.Connection, batch: list[_Request], renew: bool
    ) -> None:
        writes = [r for r in batch if r.write]
        if not writes and not renew:
            for req in batch:
                self._run(conn, req, savepoint=False)
            # Reads that work say nothing of writes (a locked, read-only or
            # full database reads fine): only their failures are reported.
            self._report(batch, wrote=False)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            # No write lock (another process holds it): the writes fail; the
            # reads of the batch still run, as they would have alone.
            for req in batch:
                if req.write:
                    req.error = self._error(exc, req.op, req.job)
                else:
                    self._run(conn, req, savepoint=False)
            self._report(batch, self._error(exc, "renew leases"))
            return
        # One write alone needs no savepoint: if it is refused, the whole
        # transaction is rolled back.
        savepoint = len(writes) > 1 or renew
        try:
            for req in batch:
                self._run(conn, req, savepoint=savepoint and req.write)
            if not savepoint and writes[0].error is not None:
                conn.execute("ROLLBACK")  # its only write was refused
            else:
                renewed = self._renew(conn) if renew else None
                conn.execute("COMMIT")
                self.stats.transactions += 1
                if renewed is not None:
                    self.leases.renewed(*renewed)
                    self.leases.keep_only(self.held)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for req in writes:
                if req.error is None:
                    req.error = self._error(exc, req.op, req.job, commit=True)
                    req.result = None
            self._report(batch, self._error(exc, "renew leases", commit=True))
        else:
            self._report(batch)
        stats = self.stats
        stats.requests += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(writes))

    def _renew(self, conn: sqlite3.Connection) -> tuple[float, list[str]]:
        """Renew the leases this store object holds: when, and which it still had.

        Only those: a claim whose caller went away is left to expire.
        """
        since = time.monotonic()
        expires = time.time() + self.lease_seconds
        still = [
            job_id
            for job_id, epoch in list(self.held.items())
            if conn.execute(
                "UPDATE jobs SET lease_expires = ? "
                "WHERE id = ? AND lease_owner = ? AND epoch = ?",
                (expires, job_id, self.owner, epoch),
            ).rowcount
        ]
        return since, still

    def _run(self, conn: sqlite3.Connection, req: _Request, *, savepoint: bool) -> None:
        if savepoint:
            conn.execute("SAVEPOINT request")
        try:
            req.result = req.fn(conn)
        except Exception as exc:
            if savepoint:
                conn.execute("ROLLBACK TO request")
                conn.execute("RELEASE request")
            req.error = (
                self._error(exc, req.op, req.job)
                if isinstance(exc, sqlite3.Error)
                else exc
            )
        else:
            if savepoint:
                conn.execute("RELEASE request")

    def _error(
        self, exc: sqlite3.Error, op: str, job: str | None = None, commit: bool = False
    ) -> StorageError:
        """SQLite's error as Duron's, translated once, here: a passing one (busy,
        read-only, full...) as :class:`~duron.StoreUnavailableError`."""
        cls = StoreUnavailableError if is_passing(exc) else StorageError
        detail = f"commit failed: {exc}" if commit else str(exc)
        error = cls(kind=_STORE, store=self.label, operation=op, detail=detail, job=job)
        error.__cause__ = exc
        return error

    def _report(
        self,
        batch: list[_Request],
        failed: StorageError | None = None,
        *,
        wrote: bool = True,
    ) -> None:
        """Tell the store's outage what this batch found (``failed``: the whole
        transaction failed with it, lease renewal included; ``wrote``: it was a
        write transaction, whose success means the store is back)."""
        for req in batch:
            if isinstance(req.error, StoreUnavailableError):
                self.outage.failed(req.error)
                return
        if isinstance(failed, StoreUnavailableError):
            self.outage.failed(failed)
        elif failed is None and wrote:
            self.outage.recovered()

    def _wake(self, batch: list[_Request]) -> None:
        self._watchers.wake(batch)


_POKE = "poke"  # queued to wake the thread without a request


def _apply_migrations(conn: sqlite3.Connection, version: int) -> None:
    """Apply the migrations after ``version`` (inside the caller's transaction)."""
    for v in range(version + 1, SCHEMA_VERSION + 1):
        statement = ""
        for part in _MIGRATIONS[v].split(";"):
            statement += part + ";"
            # A trigger's body holds ";" too: run whole statements only.
            if sqlite3.complete_statement(statement):
                if statement.strip(" \n;"):
                    conn.execute(statement)
                statement = ""
        conn.execute(f"PRAGMA user_version = {v}")
