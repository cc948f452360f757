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

The API and its rules are :class:`~duron.contrib._sqlstore.SQLStore`'s; this
module holds the SQLite statements, run on the store's DB thread
(:mod:`~duron.contrib._sqlite_engine`).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from duron._errors import JobNotFoundError
from duron._inbox import Sending, entry_patterns, refusal
from duron._jobstore import (
    TERMINAL,
    check_job_id,
    check_requeue,
    is_entry_type,
    timestamp,
)
from duron._limits import DEFAULT_LIMITS, LogLimits, checked_limits
from duron._outage import Outage
from duron.contrib._job_search import SQLiteDialect
from duron.contrib._sqlite_engine import Engine
from duron.contrib._sqlite_log import SQLiteLog
from duron.contrib._sqlstore import (
    DEFAULT_LEASE,
    DESCENDANTS,
    JOB_COLUMNS,
    TERMINAL_SQL,
    WAKE,
    LogAccess,
    SQLStore,
    cancelled_before_start,
    check_lease,
    fork_copy,
    fork_taken,
    new_owner,
)
from duron.contrib._wakeups import DONE, INBOX, WORK

if TYPE_CHECKING:
    import sqlite3
    from datetime import datetime

    from duron._log import JobStarted
    from duron.contrib._file import Durability
    from duron.contrib._sqlinbox import JobHead

__all__ = ["SQLiteStore"]

_Row = tuple[Any, ...]


class SQLiteStore(SQLStore):
    """Many jobs and their logs in one SQLite file, for one machine.

    Create one store object per file per process and share it: it owns one
    connection and one thread, and every job's appends go through them, batched
    into one transaction per round (group commit). Any number of processes may
    open the same file; leases keep them from running the same job at once.

    Example:
        ```python
        store = SQLiteStore("jobs.db")
        job_id = await store.submit(checkout.options(job_id="order-42"), order)
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
        limits: How large a job's log entries may be, and when to warn about a
            job's log size (:class:`~duron.LogLimits`; default: 4 MiB per entry).

    Raises:
        SchemaError: (on first use) The file is not a Duron store, or a newer one.
    """

    _engine: Engine

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "flush",
        lease: float = DEFAULT_LEASE,
        busy_timeout: float = 30.0,
        create: bool = True,
        limits: LogLimits = DEFAULT_LIMITS,
    ) -> None:
        if durability not in ("flush", "fsync"):
            raise ValueError(
                f"durability must be 'flush' or 'fsync', not {durability!r}"
            )
        self.lease: float = check_lease(lease)
        self.limits: LogLimits = checked_limits(limits)
        self.path: str = os.fspath(path)
        self.label: str = self.path
        self.durability: Durability = durability
        self.owner: str = new_owner()
        self._start(
            Engine(
                path=self.path,
                label=self.label,
                synchronous="FULL" if durability == "fsync" else "NORMAL",
                busy_timeout=busy_timeout,
                create=create,
                owner=self.owner,
                lease_seconds=self.lease,
                outage=Outage(f"SQLite store {self.label}"),
            )
        )
        self._dialect = SQLiteDialect()

    def log(self, job_id: str) -> SQLiteLog:
        """The log of one job, as a :class:`~duron.LogStorage`.

        ``checkout.invoke(store.log("order-42"))`` runs that job here and now, under
        its lease. Acquiring the log of an unknown id creates the job's row; releasing
        it before anything was written removes the row again. A job released before
        it ended is pending: a worker on the store will resume it.
        """
        access = LogAccess(self._engine, self._attached, self._read)
        return SQLiteLog(self, check_job_id(job_id), access)

    @property
    def transactions(self) -> int:
        """Transactions this store object committed (group commit makes it small)."""
        return self._engine.stats.transactions

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.label} durability={self.durability}>"

    # -- the statements ---------------------------------------------------------------

    @staticmethod
    def _when(value: Any) -> datetime | None:
        return timestamp(value)

    async def _add(
        self,
        job_id: str,
        entry: JobStarted,
        raw: str,
        args: str,
        parent: tuple[str, str] | None = None,
    ) -> tuple[bool, str | None]:
        parent_id, future = parent if parent is not None else (None, None)

        def run(conn: sqlite3.Connection) -> tuple[bool, str | None]:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone():
                first = conn.execute(
                    "SELECT entry FROM entries WHERE job_id = ? AND seq = 0", (job_id,)
                ).fetchone()
                return False, first[0] if first else None
            now = time.time()
            conn.execute(
                "INSERT INTO jobs (id, function, args, status, created, updated, "
                "parent_id, parent_future) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                (job_id, entry.fn, args, now, now, parent_id, future),
            )
            conn.execute(
                "INSERT INTO entries (job_id, seq, entry) VALUES (?, 0, ?)",
                (job_id, raw),
            )
            return True, None

        return await self._engine.call(run, op="submit", signal=WORK, job=job_id)

    async def _job_row(self, job_id: str) -> _Row | None:
        def run(conn: sqlite3.Connection) -> _Row | None:
            return conn.execute(  # type: ignore[no-any-return]
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()

        return await self._engine.call(run, op="get", write=False, job=job_id)

    async def _query(self, sql: str, params: list[Any], op: str) -> list[_Row]:
        def run(conn: sqlite3.Connection) -> list[_Row]:
            return conn.execute(sql, params).fetchall()

        return await self._engine.call(run, op=op, write=False)

    async def _cancel(self, job_id: str, children: bool) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            now = time.time()
            status, owner, live = self._lease_state(conn, job_id, now)
            if status in TERMINAL:
                return False
            if children:
                tree = conn.execute(
                    DESCENDANTS.format(t="jobs", m="?")
                    + "SELECT id FROM jobs WHERE id IN (SELECT id FROM tree) "
                    + f"AND status NOT IN {TERMINAL_SQL}",
                    (job_id,),
                ).fetchall()
                for (child,) in tree:
                    _request_cancel(conn, child, now)
            ran = conn.execute(
                "SELECT 1 FROM entries WHERE job_id = ? AND seq > 0 LIMIT 1", (job_id,)
            ).fetchone()
            if ran is None and not (owner is not None and live):
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', error = ?, "
                    "lease_owner = NULL, lease_expires = NULL, updated = ? "
                    "WHERE id = ?",
                    (cancelled_before_start(job_id), now, job_id),
                )
            else:
                _request_cancel(conn, job_id, now)
            return True

        return await self._engine.call(
            run, op="cancel", signal=WORK | DONE | INBOX, job=job_id
        )

    def _lease_state(
        self, conn: sqlite3.Connection, job_id: str, now: float
    ) -> tuple[str, str | None, bool]:
        """The job's status, lease owner and whether that lease is live."""
        row = conn.execute(
            "SELECT status, lease_owner, lease_expires FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        status, owner, expires = row
        return status, owner, expires is not None and expires >= now

    async def _requeue(self, job_id: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            status, owner, live = self._lease_state(conn, job_id, time.time())
            last = conn.execute(
                "SELECT entry FROM entries WHERE job_id = ? ORDER BY seq DESC LIMIT 1",
                (job_id,),
            ).fetchone()
            ended = last is not None and is_entry_type(last[0].encode(), "end")
            check_requeue(job_id, status, ended, owner, live)
            conn.execute(
                "UPDATE jobs SET status = 'pending', error = NULL, lease_owner = NULL, "
                "lease_expires = NULL, updated = ? WHERE id = ?",
                (time.time(), job_id),
            )

        await self._engine.call(run, op="requeue", signal=WORK, job=job_id)

    async def _fork(self, job_id: str, new_id: str, at: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(job=job_id, store=self.label)
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (new_id,)).fetchone():
                raise fork_taken(new_id, job_id, at)
            cur = conn.execute(
                "SELECT seq, CAST(entry AS BLOB) FROM entries WHERE job_id = ? "
                "AND seq >= 0 ORDER BY seq",
                (job_id,),
            )
            first, prefix = fork_copy(cur, job_id, at)
            now = time.time()
            conn.execute(
                "INSERT INTO jobs (id, function, args, status, created, updated, "
                "forked_from) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                (new_id, first.fn, orjson.dumps(first.args).decode(), now, now, job_id),
            )
            conn.executemany(
                "INSERT INTO entries (job_id, seq, entry) VALUES (?, ?, ?)",
                [(new_id, i, raw.decode()) for i, raw in enumerate(prefix)],
            )

        await self._engine.call(run, op="fork", signal=WORK, job=job_id)

    async def _prune(self, wanted: list[str], age: float) -> int:
        cutoff = time.time() - age
        marks = ", ".join("?" * len(wanted))
        select = f"SELECT id FROM jobs WHERE status IN ({marks}) AND updated < ?"

        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                f"DELETE FROM entries WHERE job_id IN ({select})", (*wanted, cutoff)
            )
            conn.execute(
                f"DELETE FROM inbox WHERE job_id IN ({select})", (*wanted, cutoff)
            )
            cur = conn.execute(
                f"DELETE FROM jobs WHERE id IN ({select})", (*wanted, cutoff)
            )
            return cur.rowcount

        return await self._engine.call(run, op="prune")

    async def _log_sizes(self, job_ids: list[str]) -> list[_Row]:
        marks = ", ".join("?" * len(job_ids))
        sql = (
            "SELECT job_id, count(*), sum(length(CAST(entry AS BLOB))) FROM entries "
            f"WHERE job_id IN ({marks}) AND seq >= 0 GROUP BY job_id"
        )

        def run(conn: sqlite3.Connection) -> list[_Row]:
            return conn.execute(sql, job_ids).fetchall()

        return await self._engine.call(run, op="list", write=False)

    async def _archive_tops(self, job_ids: list[str]) -> list[tuple[str, int]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            out = []
            for job_id in job_ids:  # each one a step down the primary key
                (top,) = conn.execute(
                    "SELECT max(seq) FROM entries WHERE job_id = ? AND seq < 0",
                    (job_id,),
                ).fetchone()
                if top is not None:
                    out.append((job_id, int(top)))
            return out

        return await self._engine.call(run, op="read", write=False)

    async def _read_span(
        self, job_id: str, start: int, stop: int, limit: int
    ) -> list[tuple[int, bytes]]:
        def run(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return conn.execute(
                "SELECT seq, CAST(entry AS BLOB) FROM entries "
                "WHERE job_id = ? AND seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
                (job_id, start, stop, limit),
            ).fetchall()

        return await self._engine.call(run, op="read", write=False, job=job_id)

    async def _exists(self, job_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,))
            return row.fetchone() is not None

        return await self._engine.call(run, op="read", write=False, job=job_id)

    async def _read_chunk(
        self, job_id: str, start: int, limit: int
    ) -> list[tuple[int, bytes]]:
        def run(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return conn.execute(
                "SELECT seq, CAST(entry AS BLOB) FROM entries "
                "WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (job_id, start, limit),
            ).fetchall()

        return await self._engine.call(run, op="read", write=False, job=job_id)

    async def _claim_rows(
        self, limit: int, mine: list[str], functions: tuple[str, ...] | None
    ) -> list[tuple[str, str, int, Any, Any]]:
        # A lease of this store object that it no longer holds (its release
        # failed while the database was unavailable) is taken back at once.
        runnable = (
            "(status IN ('pending', 'running') "
            "OR (status = 'suspended' AND wake_at <= :now)) AND function IS NOT NULL "
            "AND (lease_expires IS NULL OR lease_expires < :now "
            "OR lease_owner = :owner) "
            "AND id NOT IN (SELECT value FROM json_each(:mine))"
        )
        # One parameter per name: with a list (not json_each) the planner takes
        # the index of runnable jobs by function, and jobs of other functions
        # waiting for their workers cost a claim nothing.
        fns = {f"f{i}": name for i, name in enumerate(functions or ())}
        if functions is not None:
            runnable += f" AND function IN ({', '.join(':' + k for k in fns)})"
        held = orjson.dumps(mine).decode()

        def any_runnable(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                f"SELECT 1 FROM jobs WHERE {runnable} LIMIT 1",
                {"now": time.time(), "mine": held, "owner": self.owner, **fns},
            ).fetchone()
            return row is not None

        # Polling stays a cheap read while there is nothing to do.
        if not await self._engine.call(any_runnable, op="claim", write=False):
            return []

        def run(conn: sqlite3.Connection) -> list[tuple[str, str, int, Any, Any]]:
            now = time.time()
            return conn.execute(
                "UPDATE jobs SET status = 'running', lease_owner = :owner, "
                "lease_expires = :expires, epoch = epoch + 1, updated = :now, "
                "wake_at = NULL "
                f"WHERE id IN (SELECT id FROM jobs WHERE {runnable} "
                "ORDER BY created LIMIT :limit) "
                "RETURNING id, function, epoch, cancel_requested, created",
                {
                    "owner": self.owner,
                    "expires": now + self.lease,
                    "now": now,
                    "limit": limit,
                    "mine": held,
                    **fns,
                },
            ).fetchall()

        return await self._engine.call(run, op="claim")

    async def _lease_rows(self, ids: list[str]) -> dict[str, tuple[str, int, Any]]:
        owner = self.owner

        def run(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
            return conn.execute(
                "SELECT id, epoch, cancel_requested FROM jobs WHERE lease_owner = ?",
                (owner,),
            ).fetchall()

        rows = await self._engine.call(run, op="heartbeat", write=False)
        return {job_id: (owner, epoch, cancel) for job_id, epoch, cancel in rows}

    async def _fail(self, job_id: str, epoch: int, error: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, lease_owner = NULL, "
                "lease_expires = NULL, cancel_requested = 0, updated = ? "
                f"WHERE id = ? AND epoch = ? AND status NOT IN {TERMINAL_SQL}",
                (error, time.time(), job_id, epoch),
            )

        await self._engine.call(run, op="fail", signal=DONE, job=job_id)

    # -- the inbox ---------------------------------------------------------------------

    async def _job_head(self, job_id: str) -> JobHead | None:
        def run(conn: sqlite3.Connection) -> JobHead | None:
            return conn.execute(  # type: ignore[no-any-return]
                "SELECT j.status, j.function, CAST(e.entry AS BLOB) FROM jobs AS j "
                "LEFT JOIN entries AS e ON e.job_id = j.id AND e.seq = 0 "
                "WHERE j.id = ?",
                (job_id,),
            ).fetchone()

        return await self._engine.call(run, op="read", write=False, job=job_id)

    def _facts(
        self, conn: sqlite3.Connection, job_id: str, op_id: int, target: str
    ) -> tuple[str, str | None, list[tuple[int, str]], list[str]]:
        row = conn.execute(
            "SELECT status, function FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        started, done = entry_patterns(op_id)
        entries = conn.execute(
            "SELECT seq, entry FROM entries WHERE job_id = ? AND seq >= 0 "
            "AND (entry LIKE ? OR entry LIKE ?) ORDER BY seq",
            (job_id, started, done),
        ).fetchall()
        queued = [
            kind
            for (kind,) in conn.execute(
                "SELECT kind FROM inbox WHERE job_id = ? AND target = ?",
                (job_id, target),
            )
        ]
        return row[0], row[1], entries, queued

    async def _op_facts(
        self, job_id: str, op_id: int, target: str
    ) -> tuple[str, list[tuple[int, str]], list[str]]:
        def run(
            conn: sqlite3.Connection,
        ) -> tuple[str, list[tuple[int, str]], list[str]]:
            status, _, entries, queued = self._facts(conn, job_id, op_id, target)
            return status, entries, queued

        return await self._engine.call(run, op="read", write=False, job=job_id)

    async def _inbox_put(self, sending: Sending) -> int:
        job_id = sending.job_id

        def run(conn: sqlite3.Connection) -> int:
            status, function, entries, queued = self._facts(
                conn, job_id, sending.op_id, sending.target
            )
            refused = refusal(
                sending,
                status=status,
                function=function,
                entries=entries,
                queued=queued,
            )
            if refused is not None:
                raise refused
            seq: int = conn.execute(
                "UPDATE jobs SET inbox_seq = inbox_seq + 1, " + WAKE + " "
                "WHERE id = ? RETURNING inbox_seq",
                (job_id,),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO inbox (job_id, seq, kind, target, data, error, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    seq,
                    sending.kind,
                    sending.target,
                    sending.data,
                    sending.error,
                    time.time(),
                ),
            )
            return seq

        return await self._engine.call(run, op="send", signal=INBOX | WORK, job=job_id)


def _request_cancel(conn: sqlite3.Connection, job_id: str, now: float) -> None:
    """Mark the job asked to cancel, and put the request in its inbox: its run,
    on a worker or the seed way, records it once and delivers it."""
    (seq,) = conn.execute(
        "UPDATE jobs SET inbox_seq = inbox_seq + 1, cancel_requested = 1, "
        "updated = ?, " + WAKE + " WHERE id = ? RETURNING inbox_seq",
        (now, job_id),
    ).fetchone()
    conn.execute(
        "INSERT INTO inbox (job_id, seq, kind, target, data, error, created) "
        "VALUES (?, ?, 'cancel', '', NULL, NULL, ?)",
        (job_id, seq, now),
    )
