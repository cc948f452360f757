"""One job's log in a :class:`~duron.contrib.storage.SQLiteStore`: its lease and appends.

``acquire()`` takes the job's lease (or adopts the one a worker of the same store
object claimed), ``append()`` checks the lease epoch inside the transaction that
writes the entries, and an ``end`` entry records the job's status and result in that
same transaction.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import orjson

from duron._errors import LeaseLostError, LogLockedError, StorageError
from duron._jobstore import end_outcome, is_entry_type, parse_job_entry
from duron.contrib._wakeups import DONE, WORK

if TYPE_CHECKING:
    import sqlite3

    from duron.contrib._sqlite import SQLiteStore

__all__ = ["SQLiteLog"]


class SQLiteLog:
    """One job's log in a :class:`SQLiteStore`. Get it from ``store.log(job_id)``.

    ``acquire()`` takes the job's lease (or adopts the one a worker of the same
    store object claimed); ``append()`` checks the lease epoch in the same
    transaction; an ``end`` entry sets the job's status and result with it.
    """

    def __init__(self, store: SQLiteStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.label = job_id
        self._epoch: int | None = None
        self._next_seq = 0

    async def acquire(self) -> None:
        store = self.store
        job_id = self.job_id
        if self._epoch is not None or job_id in store._attached:
            raise LogLockedError(job=job_id, holder="another job in this process")
        engine = store._engine
        owner = store.owner
        held = engine.held.get(job_id)
        store._attached.add(job_id)
        try:
            if held is not None:
                # A worker of this store claimed the job: write under its lease.
                def adopt(conn: sqlite3.Connection) -> int:
                    row = conn.execute(
                        "SELECT lease_owner, epoch FROM jobs WHERE id = ?", (job_id,)
                    ).fetchone()
                    if row is None or row[0] != owner or row[1] != held:
                        raise LeaseLostError(
                            job=job_id, detail="the lease this worker claimed is gone"
                        )
                    return _next_seq(conn, job_id)

                self._next_seq = await engine.call(adopt, write=False)
                self._epoch = held
                return

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
                        (job_id, now, now, owner, now + store.lease),
                    )
                    return 1, 0
                holder, expires, epoch = row
                if holder is not None and holder != owner and expires >= now:
                    raise LogLockedError(job=job_id, holder=holder)
                conn.execute(
                    "UPDATE jobs SET lease_owner = ?, lease_expires = ?, "
                    "epoch = epoch + 1, updated = ?, status = CASE status "
                    "WHEN 'pending' THEN 'running' ELSE status END WHERE id = ?",
                    (owner, now + store.lease, now, job_id),
                )
                return epoch + 1, _next_seq(conn, job_id)

            epoch, self._next_seq = await engine.call(take)
            engine.held[job_id] = epoch
            self._epoch = epoch
        except BaseException:
            store._attached.discard(job_id)
            raise

    async def release(self) -> None:
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        store = self.store
        job_id = self.job_id
        engine = store._engine
        store._attached.discard(job_id)
        if engine.held.get(job_id) == epoch:
            del engine.held[job_id]
        owner = store.owner

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, "
                "updated = ?, status = CASE status WHEN 'running' THEN 'pending' "
                "ELSE status END WHERE id = ? AND lease_owner = ? AND epoch = ?",
                (time.time(), job_id, owner, epoch),
            )
            # A log opened but never written leaves nothing behind.
            conn.execute(
                "DELETE FROM jobs WHERE id = ? AND function IS NULL "
                "AND lease_owner IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM entries WHERE job_id = ?)",
                (job_id, job_id),
            )

        await engine.call(run, signal=WORK)

    def read(self) -> AsyncIterator[tuple[int, bytes]]:
        return self.store._read(self.job_id)

    async def append(self, entries: Sequence[bytes], /) -> None:
        epoch = self._epoch
        job_id = self.job_id
        if epoch is None:
            raise StorageError(
                f"log {job_id} is not open for writing (acquire() first)"
            )
        if not entries:
            return
        store = self.store
        owner = store.owner
        start = self._next_seq
        rows = [(job_id, start + i, e.decode()) for i, e in enumerate(entries)]
        first = entries[0] if start == 0 and is_entry_type(entries[0], "job") else None
        last = entries[-1] if is_entry_type(entries[-1], "end") else None
        outcome = end_outcome(last, job_id, start + len(entries) - 1) if last else None

        def run(conn: sqlite3.Connection) -> None:
            # A read, not an update: the jobs row's page stays out of the commit.
            # The transaction holds the write lock, so the check cannot go stale.
            row = conn.execute(
                "SELECT lease_owner, epoch FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row[0] != owner or row[1] != epoch:
                raise LeaseLostError(
                    job=job_id, detail=_lost_detail(conn, job_id, epoch)
                )
            conn.executemany(
                "INSERT INTO entries (job_id, seq, entry) VALUES (?, ?, ?)", rows
            )
            if first is not None:
                entry = parse_job_entry(first, job_id)
                assert entry is not None
                conn.execute(
                    "UPDATE jobs SET function = ?, args = ? WHERE id = ?",
                    (entry.fn, orjson.dumps(entry.args).decode(), job_id),
                )
            if outcome is not None:
                status, result, error = outcome
                conn.execute(
                    "UPDATE jobs SET status = ?, result = ?, error = ?, "
                    "cancel_requested = 0, updated = ? WHERE id = ?",
                    (
                        status,
                        orjson.dumps(result).decode()
                        if status == "completed"
                        else None,
                        orjson.dumps(error.to_json()).decode() if error else None,
                        time.time(),
                        job_id,
                    ),
                )

        await store._engine.call(
            run, signal=DONE if outcome is not None else 0, job=job_id
        )
        self._next_seq = start + len(entries)

    def __repr__(self) -> str:
        state = "held" if self._epoch is not None else "released"
        return f"<SQLiteLog {self.job_id} in {self.store.label} {state}>"


def _next_seq(conn: sqlite3.Connection, job_id: str) -> int:
    row = conn.execute(
        "SELECT max(seq) FROM entries WHERE job_id = ?", (job_id,)
    ).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def _lost_detail(conn: sqlite3.Connection, job_id: str, epoch: int) -> str:
    row = conn.execute(
        "SELECT lease_owner, epoch FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None:
        return "the job was deleted from the store"
    owner, current = row
    if owner is None:
        return f"the lease was released (epoch {current}; this writer had {epoch})"
    return (
        f"{owner} took the job over (epoch {current}; this writer had {epoch}) "
        "after this writer's lease expired"
    )
