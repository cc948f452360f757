"""One job's log in a :class:`~duron.contrib.storage.SQLiteStore`: its lease and appends.

``acquire()`` takes the job's lease (or adopts the one a worker of the same store
object claimed), ``append()`` checks the lease epoch inside the transaction that
writes the entries, and an ``end`` entry records the job's status and result in that
same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from duron._errors import LeaseLostError, LogLockedError
from duron.contrib._sqllog import SQLLog, archived_runs, archived_seq, lost_detail
from duron.contrib._wakeups import DONE, WORK

if TYPE_CHECKING:
    import sqlite3

    # The base class's type argument: ruff does not see a name used there.
    from duron.contrib._sqlite import SQLiteStore  # noqa: F401
    from duron.contrib._sqlite_engine import Engine
    from duron.contrib._sqllog import Ending, Started, Suspension
    from duron.contrib._sqlstore import LogAccess

__all__ = ["SQLiteLog"]


class SQLiteLog(SQLLog["SQLiteStore"]):
    """One job's log in a :class:`SQLiteStore`. Get it from ``store.log(job_id)``.

    ``acquire()`` takes the job's lease (or adopts the one a worker of the same
    store object claimed); ``append()`` checks the lease epoch in the same
    transaction; an ``end`` entry sets the job's status and result with it.
    """

    _access: LogAccess[Engine]

    async def _adopt(self, epoch: int) -> int:
        job_id, owner = self.job_id, self.store.owner

        def adopt(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT lease_owner, epoch FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row[0] != owner or row[1] != epoch:
                raise LeaseLostError(
                    job=job_id, detail="the lease this worker claimed is gone"
                )
            return _next_seq(conn, job_id)

        return await self._access.engine.call(
            adopt, op="acquire", write=False, job=job_id
        )

    async def _take(self) -> tuple[int, int]:
        job_id, owner, lease = self.job_id, self.store.owner, self.store.lease

        def take(conn: sqlite3.Connection) -> tuple[int, int]:
            now = time.time()
            row = conn.execute(
                "SELECT lease_owner, lease_expires, epoch FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO jobs (id, status, created, updated, lease_owner, "
                    "lease_expires, epoch) VALUES (?, 'running', ?, ?, ?, ?, 1)",
                    (job_id, now, now, owner, now + lease),
                )
                return 1, 0
            holder, expires, epoch = row
            if holder is not None and holder != owner and expires >= now:
                raise LogLockedError(job=job_id, holder=holder)
            conn.execute(
                "UPDATE jobs SET lease_owner = ?, lease_expires = ?, "
                "epoch = epoch + 1, updated = ?, status = CASE status "
                "WHEN 'pending' THEN 'running' ELSE status END WHERE id = ?",
                (owner, now + lease, now, job_id),
            )
            return epoch + 1, _next_seq(conn, job_id)

        return await self._access.engine.call(take, op="acquire", job=job_id)

    async def _renew(self, epoch: int) -> None:
        job_id, owner, lease = self.job_id, self.store.owner, self.store.lease

        def renew(conn: sqlite3.Connection) -> None:
            renewed = conn.execute(
                "UPDATE jobs SET lease_expires = ? "
                "WHERE id = ? AND lease_owner = ? AND epoch = ?",
                (time.time() + lease, job_id, owner, epoch),
            ).rowcount
            if not renewed:
                raise LeaseLostError(job=job_id, detail=_lost(conn, job_id, epoch))

        await self._access.engine.call(renew, op="renew lease", job=job_id)

    async def _inbox_rows(
        self, after: int, done: list[int], limit: int
    ) -> list[tuple[Any, ...]]:
        job_id = self.job_id

        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if done:
                conn.executemany(
                    "DELETE FROM inbox WHERE job_id = ? AND seq = ?",
                    [(job_id, seq) for seq in done],
                )
            return conn.execute(
                "SELECT seq, kind, target, data, error FROM inbox "
                "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after, limit),
            ).fetchall()

        return await self._access.engine.call(
            run, op="read inbox", write=bool(done), job=job_id
        )

    async def _unlease(
        self, epoch: int, *, wrote: bool, suspension: Suspension | None = None
    ) -> None:
        job_id, owner = self.job_id, self.store.owner

        def run(conn: sqlite3.Connection) -> None:
            # One writer at a time: what this transaction reads stays true.
            suspend = (
                suspension is not None
                and not conn.execute(
                    "SELECT cancel_requested OR EXISTS (SELECT 1 FROM inbox "
                    "WHERE job_id = ? AND seq > ?) FROM jobs WHERE id = ?",
                    (job_id, suspension.seen, job_id),
                ).fetchone()[0]
            )
            conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, "
                "updated = ?, wake_at = ?, status = CASE status WHEN 'running' "
                "THEN ? ELSE status END "
                "WHERE id = ? AND lease_owner = ? AND epoch = ?",
                (
                    time.time(),
                    suspension.until if suspend and suspension else None,
                    "suspended" if suspend else "pending",
                    job_id,
                    owner,
                    epoch,
                ),
            )
            # A log opened but never written leaves nothing behind.
            conn.execute(
                "DELETE FROM jobs WHERE id = ? AND function IS NULL "
                "AND lease_owner IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM entries WHERE job_id = ?)",
                (job_id, job_id),
            )

        await self._access.engine.call(run, op="release", signal=WORK, job=job_id)

    async def _continue(
        self,
        epoch: int,
        start: int,
        entries: Sequence[bytes],
        first: bytes,
        inbox_done: list[int],
    ) -> None:
        job_id, owner = self.job_id, self.store.owner
        rows = [
            (job_id, start + i, e.decode(), job_id, owner, epoch)
            for i, e in enumerate(entries)
        ]

        def run(conn: sqlite3.Connection) -> None:
            inserted = conn.executemany(_INSERT, rows).rowcount
            if inserted != len(rows):
                raise LeaseLostError(job=job_id, detail=_lost(conn, job_id, epoch))
            (top,) = conn.execute(
                "SELECT max(seq) FROM entries WHERE job_id = ? AND seq < 0", (job_id,)
            ).fetchone()
            shift = archived_seq(archived_runs(top))
            conn.execute(
                "UPDATE entries SET seq = seq + ? WHERE job_id = ? AND seq >= 0",
                (shift, job_id),
            )
            conn.execute(
                "INSERT INTO entries (job_id, seq, entry) VALUES (?, 0, ?)",
                (job_id, first.decode()),
            )
            conn.executemany(
                "DELETE FROM inbox WHERE job_id = ? AND seq = ?",
                [(job_id, seq) for seq in inbox_done],
            )
            conn.execute(
                "UPDATE jobs SET updated = ? WHERE id = ?", (time.time(), job_id)
            )

        await self._access.engine.call(run, op="append", job=job_id)

    async def _write(
        self,
        epoch: int,
        start: int,
        entries: Sequence[bytes],
        started: Started | None,
        ending: Ending | None,
    ) -> None:
        job_id, owner = self.job_id, self.store.owner
        rows = [
            (job_id, start + i, e.decode(), job_id, owner, epoch)
            for i, e in enumerate(entries)
        ]

        def run(conn: sqlite3.Connection) -> None:
            # The epoch check rides in the insert (a row per entry only while the
            # lease is still this writer's), and reads the jobs row without
            # updating it, so its page stays out of the commit. The transaction
            # holds the write lock, so the check cannot go stale.
            if len(rows) == 1:
                inserted = conn.execute(_INSERT, rows[0]).rowcount
            else:
                inserted = conn.executemany(_INSERT, rows).rowcount
            if inserted != len(rows):
                raise LeaseLostError(job=job_id, detail=_lost(conn, job_id, epoch))
            if started is not None:
                conn.execute(
                    "UPDATE jobs SET function = ?, args = ? WHERE id = ?",
                    (started.function, started.args, job_id),
                )
            if ending is not None:
                conn.execute(
                    "UPDATE jobs SET status = ?, result = ?, error = ?, "
                    "cancel_requested = 0, updated = ? WHERE id = ?",
                    (ending.status, ending.result, ending.error, time.time(), job_id),
                )

        await self._access.engine.call(
            run, op="append", signal=DONE if ending is not None else 0, job=job_id
        )


_INSERT = (
    "INSERT INTO entries (job_id, seq, entry) SELECT ?, ?, ? FROM jobs "
    "WHERE id = ? AND lease_owner = ? AND epoch = ?"
)


def _lost(conn: sqlite3.Connection, job_id: str, epoch: int) -> str:
    row = conn.execute(
        "SELECT lease_owner, epoch, status FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    return lost_detail(row, epoch)


def _next_seq(conn: sqlite3.Connection, job_id: str) -> int:
    row = conn.execute(
        "SELECT max(seq) FROM entries WHERE job_id = ?", (job_id,)
    ).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1
