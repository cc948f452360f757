"""Many jobs in one SQLite file: the job table, their logs, leases and group commit.

Two tables: ``jobs`` (one row per job: function, arguments, status, result or
error, lease owner, lease expiry, epoch) and ``entries`` (job id, sequence number,
the entry's JSON text: the same bytes a file log holds on one line).

Ownership: a job's writer holds a lease (owner, expiry, epoch). Taking a lease
bumps the epoch; every append checks, in its own transaction, that the epoch is
still the one it took, so a writer that lost its lease (its process stalled past
the expiry and another took the job) is refused with
:class:`~duron.LeaseLostError` instead of writing. Leases this store object holds
are renewed by its DB thread every third of their length.
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio
import orjson

from duron._errors import (
    DuplicateJobError,
    JobCancelledError,
    JobNotFoundError,
    UsageError,
)
from duron._exceptions import error_info
from duron._jobstore import (
    TERMINAL,
    Claim,
    Heartbeat,
    JobInfo,
    JobStatus,
    check_job_id,
    check_resubmit,
    decode_error,
    fork_prefix,
    is_entry_type,
    job_entry_for,
    new_job_id,
    outcome_of,
    parse_job_entry,
    seconds,
    statuses,
    timestamp,
)
from duron._log import encode_entry
from duron.contrib._sqlite_engine import Engine
from duron.contrib._sqlite_log import SQLiteLog
from duron.contrib._wakeups import DONE, WORK

if TYPE_CHECKING:
    import sqlite3
    from datetime import timedelta

    from duron._durable import DurableFn
    from duron.contrib._file import Durability

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")
_READ_CHUNK = 1000
_TERMINAL_SQL = "('completed', 'failed', 'cancelled')"
_JOB_COLUMNS = (
    "id, function, args, status, result, error, created, updated, lease_owner, "
    "lease_expires, epoch, cancel_requested, forked_from"
)


def _job_info(row: tuple[Any, ...]) -> JobInfo:
    (
        job_id,
        function,
        args,
        status,
        result,
        error,
        created,
        updated,
        owner,
        expires,
        epoch,
        cancel,
        forked_from,
    ) = row
    created_at = timestamp(created)
    updated_at = timestamp(updated)
    assert created_at is not None
    assert updated_at is not None
    return JobInfo(
        id=job_id,
        function=function,
        status=status,
        args=orjson.loads(args) if args is not None else None,
        result=orjson.loads(result) if result is not None else None,
        error=decode_error(error),
        created=created_at,
        updated=updated_at,
        lease_owner=owner,
        lease_expires=timestamp(expires),
        epoch=epoch,
        cancel_requested=bool(cancel),
        forked_from=forked_from,
    )


class SQLiteStore:
    """Many jobs and their logs in one SQLite file, for one machine.

    Create one store object per file per process and share it: it owns one
    connection and one thread, and every job's appends go through them, batched
    into one transaction per round (group commit). Any number of processes may
    open the same file; leases keep them from running the same job at once.

    Example:
        ```python
        store = SQLiteStore("jobs.db")
        job_id = await store.submit(checkout, order, job_id="order-42")
        async with duron.Worker(store, [checkout]):
            print(await store.result(job_id))
        ```

    Args:
        path: The database file (created with its tables unless ``create=False``).
        durability: ``"flush"`` (default, ``PRAGMA synchronous=NORMAL``): a commit
            survives the process crashing. ``"fsync"`` (``synchronous=FULL``): it
            also survives the machine losing power, at one fsync per commit.
        lease: Seconds a job's lease lasts without renewal: how long a crashed
            process's jobs wait before another process takes them over.
        busy_timeout: Seconds to wait for another process's write lock.
        create: Create the file and its tables if missing (the CLI passes False).

    Raises:
        SchemaError: (on first use) The file is not a Duron store, or a newer one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "flush",
        lease: float = 30.0,
        busy_timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        if durability not in ("flush", "fsync"):
            raise ValueError(
                f"durability must be 'flush' or 'fsync', not {durability!r}"
            )
        if not lease > 0:
            raise ValueError(f"lease must be a number of seconds > 0, not {lease!r}")
        self.path = os.fspath(path)
        self.label = self.path
        self.durability: Durability = durability
        self.lease = float(lease)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._engine = Engine(
            path=self.path,
            label=self.label,
            synchronous="FULL" if durability == "fsync" else "NORMAL",
            busy_timeout=busy_timeout,
            create=create,
            owner=self.owner,
            lease_seconds=self.lease,
        )
        self._attached: set[str] = set()
        # The thread holds no reference to the store: dropping the store stops it.
        weakref.finalize(self, self._engine.stop)

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the store's thread once queued work is done (idempotent)."""
        await self._engine.close()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one job's log --------------------------------------------------------------

    def log(self, job_id: str) -> SQLiteLog:
        """The log of one job, as a :class:`~duron.LogStorage`.

        ``checkout.invoke(store.log("order-42"))`` runs that job here and now, under
        its lease. Acquiring the log of an unknown id creates the job's row; releasing
        it before anything was written removes the row again. A job released before
        it ended is pending: a worker on the store will resume it.
        """
        return SQLiteLog(self, check_job_id(job_id))

    # -- jobs -----------------------------------------------------------------------

    async def submit(
        self,
        fn: DurableFn[..., Any],
        /,
        *args: Any,
        job_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Add a job running ``fn(*args, **kwargs)``, for a worker to run.

        Submitting again with the same ``job_id`` and the same call returns the
        same id and changes nothing, so a request handler may retry freely.

        Args:
            fn: A ``@duron.durable`` function.
            *args: Its arguments (after the context).
            job_id: The job's id (default: a random one).
            **kwargs: Its keyword arguments.

        Returns:
            The job id.

        Raises:
            DuplicateJobError: ``job_id`` names a job with other arguments or
                another function.
            PayloadError: An argument cannot be encoded for the log.
        """
        entry = job_entry_for(fn, args, kwargs)
        jid = new_job_id() if job_id is None else check_job_id(job_id)
        raw = encode_entry(entry).decode()
        args_json = orjson.dumps(entry.args).decode()

        def run(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (jid,)).fetchone()
            if row is not None:
                first = conn.execute(
                    "SELECT entry FROM entries WHERE job_id = ? AND seq = 0", (jid,)
                ).fetchone()
                recorded = parse_job_entry(first[0], jid) if first else None
                if recorded is None:
                    raise DuplicateJobError(
                        job=jid,
                        recorded="a log opened with store.log() that holds no job yet",
                        requested=f"{fn.name}(...)",
                    )
                check_resubmit(jid, entry, recorded)
                return jid
            now = time.time()
            conn.execute(
                "INSERT INTO jobs (id, function, args, status, created, updated) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (jid, entry.fn, args_json, now, now),
            )
            conn.execute(
                "INSERT INTO entries (job_id, seq, entry) VALUES (?, 0, ?)", (jid, raw)
            )
            return jid

        return await self._engine.call(run, signal=WORK)

    async def get(self, job_id: str) -> JobInfo:
        """The job's row.

        Raises:
            JobNotFoundError: No such job.
        """

        def run(conn: sqlite3.Connection) -> JobInfo:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFoundError(job=job_id, store=self.label)
            return _job_info(row)

        return await self._engine.call(run, write=False)

    async def list_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        *,
        limit: int | None = None,
    ) -> list[JobInfo]:
        """Jobs, oldest first.

        Args:
            status: Only jobs with this status (or one of these).
            limit: At most this many.
        """
        where = ""
        params: list[Any] = []
        if status is not None:
            wanted = statuses(status, ended=False)
            where = f"WHERE status IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY created, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))

        def run(conn: sqlite3.Connection) -> list[JobInfo]:
            return [_job_info(row) for row in conn.execute(sql, params)]

        return await self._engine.call(run, write=False)

    @overload
    async def result(
        self, job_id: str, fn: DurableFn[..., _T], *, timeout: float | None = None
    ) -> _T: ...
    @overload
    async def result(
        self, job_id: str, fn: None = None, *, timeout: float | None = None
    ) -> Any: ...
    async def result(
        self,
        job_id: str,
        fn: DurableFn[..., Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Wait for the job to end and return its result, or raise its error.

        A job ending in this process wakes the waiter at once; one ending in
        another process is seen by polling (every 10 ms, backing off to 1 s).

        Args:
            job_id: The job.
            fn: The durable function, to decode the result into its return type;
                without it the result is the recorded JSON data.
            timeout: Give up after this many seconds.

        Returns:
            The job's result.

        Raises:
            JobNotFoundError: No such job.
            JobCancelledError: The job was cancelled.
            TimeoutError: ``timeout`` passed first.
            Exception: The job's error, as its own type when it can be rebuilt.
        """
        deadline = None if timeout is None else anyio.current_time() + timeout
        delay = 0.01
        while True:
            info = await self.get(job_id)
            if info.finished:
                return outcome_of(info, fn)
            wait = delay
            if deadline is not None:
                left = deadline - anyio.current_time()
                if left <= 0:
                    raise TimeoutError(
                        f"job {job_id} did not finish within {timeout} s "
                        f"(status {info.status})"
                    )
                wait = min(wait, left)
            await self._engine.wait_signal(DONE, wait, job_id)
            delay = min(delay * 2, 1.0)

    async def cancel(self, job_id: str) -> bool:
        """Ask for the job to be cancelled.

        A job that never ran is cancelled at once. Otherwise the worker running
        it (or the next to claim it) calls ``job.cancel()``: the request is
        logged, and the durable code gets the cancellation at its next await. If
        it lets the cancellation end it, the job ends ``cancelled`` and
        :meth:`result` raises :class:`~duron.JobCancelledError`.

        Returns:
            ``False`` if the job had already ended, else ``True``.

        Raises:
            JobNotFoundError: No such job.
        """

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status, lease_owner, lease_expires FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                raise JobNotFoundError(job=job_id, store=self.label)
            status, owner, expires = row
            if status in TERMINAL:
                return False
            now = time.time()
            ran = conn.execute(
                "SELECT 1 FROM entries WHERE job_id = ? AND seq > 0 LIMIT 1", (job_id,)
            ).fetchone()
            if ran is None and (owner is None or expires < now):
                error = error_info(
                    JobCancelledError(f"job {job_id} was cancelled before it started")
                )
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', error = ?, "
                    "lease_owner = NULL, lease_expires = NULL, updated = ? "
                    "WHERE id = ?",
                    (orjson.dumps(error.to_json()).decode(), now, job_id),
                )
            else:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?",
                    (now, job_id),
                )
            return True

        return await self._engine.call(run, signal=WORK | DONE, job=job_id)

    async def requeue(self, job_id: str) -> None:
        """Make a job runnable again that a worker failed without its log ending.

        That is a job whose function a worker did not know, whose log its code no
        longer replays, or whose storage failed: fix the cause, then requeue it.
        A job whose lease expired (its process died) is made pending at once.

        Raises:
            JobNotFoundError: No such job.
            UsageError: The job's log ended (fork it to run it again), or a live
                lease holds it.
        """

        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT status, lease_owner, lease_expires FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                raise JobNotFoundError(job=job_id, store=self.label)
            status, owner, expires = row
            last = conn.execute(
                "SELECT entry FROM entries WHERE job_id = ? ORDER BY seq DESC LIMIT 1",
                (job_id,),
            ).fetchone()
            ended = last is not None and is_entry_type(last[0].encode(), "end")
            if ended or status in ("completed", "cancelled"):
                raise UsageError(
                    f"job {job_id} ended ({status}): it cannot run again; fork it "
                    "to re-run it from a step (store.fork / `duron jobs fork`)"
                )
            if owner is not None and expires >= time.time():
                raise UsageError(
                    f"job {job_id} is running: {owner} holds its lease; cancel it "
                    "or wait for it"
                )
            conn.execute(
                "UPDATE jobs SET status = 'pending', error = NULL, lease_owner = NULL, "
                "lease_expires = NULL, updated = ? WHERE id = ?",
                (time.time(), job_id),
            )

        await self._engine.call(run, signal=WORK)

    async def fork(self, job_id: str, *, at: int, new_id: str | None = None) -> str:
        """A new pending job that re-runs ``job_id`` from operation ``at``.

        Operations are numbered from 0 in the order the durable code issued them
        (the ``id`` of their log entries; ``duron inspect`` shows them). The new
        job's log is the old one's prefix up to the first entry of operation
        ``at``: operations before it that had completed by then replay without
        running, everything from operation ``at`` on runs live. ``at=0`` re-runs
        the whole job with the same arguments. The job entry is copied as is (same
        arguments, same random seed).

        Args:
            job_id: The job to fork (in any status).
            at: The first operation to run again.
            new_id: The new job's id (default: a random one).

        Returns:
            The new job's id.

        Raises:
            JobNotFoundError: No such job.
            DuplicateJobError: ``new_id`` is taken.
        """
        nid = new_job_id() if new_id is None else check_job_id(new_id)

        def run(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT function, args FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFoundError(job=job_id, store=self.label)
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (nid,)).fetchone():
                raise DuplicateJobError(
                    job=nid,
                    recorded="another job",
                    requested=f"a fork of {job_id} at operation {at}",
                )
            cur = conn.execute(
                "SELECT seq, CAST(entry AS BLOB) FROM entries WHERE job_id = ? "
                "ORDER BY seq",
                (job_id,),
            )
            prefix = fork_prefix(cur, job_id, at)
            first = parse_job_entry(prefix[0], job_id)
            assert first is not None
            now = time.time()
            conn.execute(
                "INSERT INTO jobs (id, function, args, status, created, updated, "
                "forked_from) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                (nid, first.fn, orjson.dumps(first.args).decode(), now, now, job_id),
            )
            conn.executemany(
                "INSERT INTO entries (job_id, seq, entry) VALUES (?, ?, ?)",
                [(nid, i, raw.decode()) for i, raw in enumerate(prefix)],
            )
            return nid

        return await self._engine.call(run, signal=WORK)

    async def prune(
        self,
        *,
        status: JobStatus | Iterable[JobStatus] = ("completed", "failed", "cancelled"),
        older_than: timedelta,
    ) -> int:
        """Delete ended jobs, with their logs, last changed before ``now - older_than``.

        Args:
            status: Which ended statuses to delete (``completed``, ``failed``,
                ``cancelled``; default all three).
            older_than: How long a job must have been unchanged.

        Returns:
            How many jobs were deleted.

        Raises:
            UsageError: A status that is not an ended one.
        """
        wanted = statuses(status, ended=True)
        cutoff = time.time() - seconds(older_than)
        marks = ", ".join("?" * len(wanted))
        select = f"SELECT id FROM jobs WHERE status IN ({marks}) AND updated < ?"

        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                f"DELETE FROM entries WHERE job_id IN ({select})", (*wanted, cutoff)
            )
            cur = conn.execute(
                f"DELETE FROM jobs WHERE id IN ({select})", (*wanted, cutoff)
            )
            return cur.rowcount

        return await self._engine.call(run)

    async def read_log(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The job's log entries, oldest first, as ``(seq, entry)``.

        Raises:
            JobNotFoundError: No such job.
        """

        def exists(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,))
            return row.fetchone() is not None

        if not await self._engine.call(exists, write=False):
            raise JobNotFoundError(job=job_id, store=self.label)
        async for item in self._read(job_id):
            yield item

    async def _read(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        start = 0
        while True:

            def chunk(
                conn: sqlite3.Connection, start: int = start
            ) -> list[tuple[int, bytes]]:
                return conn.execute(
                    "SELECT seq, CAST(entry AS BLOB) FROM entries "
                    "WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                    (job_id, start, _READ_CHUNK),
                ).fetchall()

            rows = await self._engine.call(chunk, write=False)
            for row in rows:
                yield row
            if len(rows) < _READ_CHUNK:
                return
            start = rows[-1][0] + 1

    # -- what a worker uses ---------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Take the leases of up to ``limit`` runnable jobs, oldest first.

        Runnable: pending, or running under a lease that expired (its process
        died). Each claim bumps the job's epoch. The jobs this store object holds
        are skipped: a lease that ran out while this process stalled is renewed,
        or lost to another owner, never claimed twice.
        """
        if limit <= 0:
            return []
        runnable = (
            "status IN ('pending', 'running') AND function IS NOT NULL "
            "AND (lease_expires IS NULL OR lease_expires < :now) "
            "AND id NOT IN (SELECT value FROM json_each(:mine))"
        )
        mine = orjson.dumps(list(self._engine.held)).decode()

        def any_runnable(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                f"SELECT 1 FROM jobs WHERE {runnable} LIMIT 1",
                {"now": time.time(), "mine": mine},
            ).fetchone()
            return row is not None

        # Polling stays a cheap read while there is nothing to do.
        if not await self._engine.call(any_runnable, write=False):
            return []

        def run(conn: sqlite3.Connection) -> list[Claim]:
            now = time.time()
            rows = conn.execute(
                "UPDATE jobs SET status = 'running', lease_owner = :owner, "
                "lease_expires = :expires, epoch = epoch + 1, updated = :now "
                f"WHERE id IN (SELECT id FROM jobs WHERE {runnable} "
                "ORDER BY created LIMIT :limit) "
                "RETURNING id, function, epoch, cancel_requested, created",
                {
                    "owner": self.owner,
                    "expires": now + self.lease,
                    "now": now,
                    "limit": limit,
                    "mine": mine,
                },
            ).fetchall()
            rows.sort(key=lambda r: (r[4], r[0]))
            return [Claim(r[0], r[1], r[2], bool(r[3])) for r in rows]

        claims = await self._engine.call(run)
        for c in claims:
            self._engine.held[c.job_id] = c.epoch
        return claims

    async def heartbeat(self, job_ids: Iterable[str]) -> Heartbeat:
        """Which of these jobs this store lost, and which were asked to cancel."""
        ids = list(job_ids)
        if not ids:
            return Heartbeat()

        def run(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
            return conn.execute(
                "SELECT id, epoch, cancel_requested FROM jobs WHERE lease_owner = ?",
                (self.owner,),
            ).fetchall()

        mine = {r[0]: (r[1], r[2]) for r in await self._engine.call(run, write=False)}
        # Read after the reply: a job this store released meanwhile (it ended, or
        # stopped) is no longer held, and so not lost.
        held = self._engine.held
        lost = frozenset(
            j for j in ids if j in held and (j not in mine or mine[j][0] != held[j])
        )
        cancel = frozenset(j for j in ids if j in mine and mine[j][1] and j not in lost)
        return Heartbeat(lost, cancel)

    async def fail(self, job_id: str, epoch: int, error: BaseException) -> None:
        """Mark a job failed with ``error``, unless it ended or changed owner."""
        info = orjson.dumps(error_info(error).to_json()).decode()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, lease_owner = NULL, "
                "lease_expires = NULL, cancel_requested = 0, updated = ? "
                f"WHERE id = ? AND epoch = ? AND status NOT IN {_TERMINAL_SQL}",
                (info, time.time(), job_id, epoch),
            )

        try:
            await self._engine.call(run, signal=DONE, job=job_id)
        finally:
            if self._engine.held.get(job_id) == epoch:
                del self._engine.held[job_id]

    async def wait_for_work(self, timeout: float) -> None:
        """Return when this process submitted, requeued or cancelled a job, or after
        ``timeout`` seconds (other processes' submissions are seen by polling)."""
        await self._engine.wait_signal(WORK, timeout)

    @property
    def transactions(self) -> int:
        """Transactions this store object committed (group commit makes it small)."""
        return self._engine.stats.transactions

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.label} durability={self.durability}>"
