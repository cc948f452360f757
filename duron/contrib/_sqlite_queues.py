"""The SQLite store's claims, queue limits (see :mod:`._queue_claims`) and
schedules (see :mod:`duron._schedules`).

A claim is a request on the store's DB thread, inside a write transaction
(``BEGIN IMMEDIATE``): SQLite has one writer at a time, across every process
using the file, so counting a queue's running jobs and taking its next ones
cannot interleave with another claim.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from duron.contrib._queue_claims import (
    RUNNABLE_SQLITE,
    Candidate,
    QueueLoad,
    best,
    queue_from_row,
    take,
)
from duron.contrib._sqlqueues import SCHEDULE_COLUMNS
from duron.contrib._wakeups import WORK

if TYPE_CHECKING:
    import sqlite3

    from duron._queues import Queue
    from duron._schedules import Schedule
    from duron.contrib._sqlite_engine import Engine
    from duron.contrib._sqlqueues import ScheduleRow, TickJob

__all__ = ["SQLiteQueues"]

_ClaimRow = tuple[str, str, int, Any, Any]


def _marks(prefix: str, values: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Named parameters for a list (``:p0, :p1``): the planner then uses the
    indexes by function and by queue."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(":" + k for k in params), params


class SQLiteQueues:
    """The claim, queue and schedule statements of :class:`~duron.contrib.storage.SQLiteStore`."""

    _engine: Engine
    owner: str
    lease: float

    async def _claim_rows(
        self,
        limit: int,
        mine: list[str],
        functions: tuple[str, ...] | None,
        queues: tuple[str, ...] | None,
    ) -> list[_ClaimRow]:
        # A lease of this store object that it no longer holds (its release
        # failed while the database was unavailable) is taken back at once.
        runnable = RUNNABLE_SQLITE
        params: dict[str, Any] = {
            "owner": self.owner,
            "mine": orjson.dumps(mine).decode(),
        }
        if functions is not None:
            marks, fns = _marks("f", functions)
            runnable += f" AND function IN ({marks})"
            params.update(fns)
        if queues is not None:
            marks, qs = _marks("q", queues)
            runnable += f" AND queue IN ({marks})"
            params.update(qs)

        def any_runnable(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                f"SELECT 1 FROM jobs WHERE {runnable} LIMIT 1",
                {**params, "now": time.time()},
            ).fetchone()
            return row is not None

        # Polling stays a cheap read while there is nothing to do.
        if not await self._engine.call(any_runnable, op="claim", write=False):
            return []

        def run(conn: sqlite3.Connection) -> list[_ClaimRow]:
            now = time.time()
            p = {**params, "now": now, "limit": limit}
            limited = [
                q
                for q in map(
                    queue_from_row,
                    conn.execute(
                        "SELECT name, concurrency, rate_starts, rate_per FROM queues "
                        "WHERE concurrency IS NOT NULL OR rate_starts IS NOT NULL "
                        "ORDER BY name"
                    ),
                )
                if queues is None or q.name in queues
            ]
            cols = (
                "SELECT id, priority, created, status = 'running', started IS NOT NULL "
                "FROM jobs WHERE "
            )
            order = " ORDER BY priority DESC, created, id LIMIT :limit"
            marks, lim = _marks("l", tuple(q.name for q in limited))
            free_queues = f" AND queue NOT IN ({marks})" if limited else ""
            found = [
                Candidate(*row)
                for row in conn.execute(
                    cols + runnable + free_queues + order, {**p, **lim}
                )
            ]
            for q in limited:
                running = conn.execute(
                    "SELECT count(*) FROM jobs WHERE queue = ? AND status = 'running'",
                    (q.name,),
                ).fetchone()[0]
                recent = 0
                if q.rate_limit is not None:
                    recent = conn.execute(
                        "SELECT count(*) FROM jobs WHERE queue = ? AND started > ?",
                        (q.name, now - q.rate_limit.per),
                    ).fetchone()[0]
                rows = conn.execute(
                    cols + runnable + " AND queue = :queue" + order,
                    {**p, "queue": q.name},
                )
                found += take(
                    QueueLoad(q, running, recent), (Candidate(*r) for r in rows)
                )
            chosen = [c.id for c in best(found, limit)]
            if not chosen:
                return []
            return conn.execute(
                "UPDATE jobs SET status = 'running', lease_owner = :owner, "
                "lease_expires = :expires, epoch = epoch + 1, updated = :now, "
                "wake_at = NULL, started = coalesce(started, :now) "
                "WHERE id IN (SELECT value FROM json_each(:chosen)) "
                "RETURNING id, function, epoch, cancel_requested, created",
                {
                    "owner": self.owner,
                    "expires": now + self.lease,
                    "now": now,
                    "chosen": orjson.dumps(chosen).decode(),
                },
            ).fetchall()

        return await self._engine.call(run, op="claim")

    async def _set_queue(self, queue: Queue) -> None:
        rate = queue.rate_limit

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO queues (name, concurrency, rate_starts, rate_per, "
                "updated) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "concurrency = excluded.concurrency, rate_starts = "
                "excluded.rate_starts, rate_per = excluded.rate_per, "
                "updated = excluded.updated",
                (
                    queue.name,
                    queue.concurrency,
                    None if rate is None else rate.starts,
                    None if rate is None else rate.per,
                    time.time(),
                ),
            )

        # Room under a raised limit: the workers look again at once.
        await self._engine.call(run, op="set queue", signal=WORK)

    async def _queue_rows(self) -> list[tuple[Any, ...]]:
        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT name, concurrency, rate_starts, rate_per FROM queues "
                "ORDER BY name"
            ).fetchall()

        return await self._engine.call(run, op="list queues", write=False)

    # -- schedules ---------------------------------------------------------------------

    async def _put_schedule(
        self,
        schedule: Schedule,
        function: str,
        args: str,
        queue: str,
        priority: int,
        next_at: float,
    ) -> None:
        s = schedule

        def run(conn: sqlite3.Connection) -> None:
            now = time.time()
            # Every SET expression reads the row as it was.
            conn.execute(
                f"INSERT INTO schedules ({SCHEDULE_COLUMNS}, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET function = excluded.function, "
                "args = excluded.args, missed = excluded.missed, "
                "grace = excluded.grace, queue = excluded.queue, "
                "priority = excluded.priority, updated = excluded.updated, "
                "next_at = CASE WHEN schedules.cron = excluded.cron AND "
                "schedules.timezone = excluded.timezone THEN schedules.next_at "
                "ELSE excluded.next_at END, cron = excluded.cron, "
                "timezone = excluded.timezone",
                (
                    s.name,
                    function,
                    args,
                    s.cron,
                    s.timezone,
                    s.missed,
                    s.grace,
                    queue,
                    priority,
                    next_at,
                    now,
                    now,
                ),
            )

        await self._engine.call(run, op="add schedule")

    async def _schedule_rows(self, name: str | None) -> list[ScheduleRow]:
        def run(conn: sqlite3.Connection) -> list[ScheduleRow]:
            if name is None:
                sql = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
                return conn.execute(sql).fetchall()
            sql = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
            return conn.execute(sql, (name,)).fetchall()

        return await self._engine.call(run, op="list schedules", write=False)

    async def _pause(self, name: str, paused: bool, next_at: float | None) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE schedules SET paused = ?, next_at = coalesce(?, next_at), "
                "updated = ? WHERE name = ?",
                (int(paused), next_at, time.time(), name),
            )
            return cur.rowcount > 0

        return await self._engine.call(run, op="pause schedule")

    async def _remove_schedule(self, name: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            return cur.rowcount > 0

        return await self._engine.call(run, op="remove schedule")

    async def _due_rows(self, functions: tuple[str, ...]) -> list[ScheduleRow]:
        marks, fns = _marks("f", functions)

        def run(conn: sqlite3.Connection) -> list[ScheduleRow]:
            return conn.execute(
                f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE paused = 0 "
                f"AND next_at <= :now AND function IN ({marks})",
                {"now": time.time(), **fns},
            ).fetchall()

        if not functions:
            return []
        return await self._engine.call(run, op="schedules", write=False)

    async def _fire(
        self,
        name: str,
        expected: Any,
        next_at: float,
        tick: float | None,
        job: TickJob | None,
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            moved = conn.execute(
                "UPDATE schedules SET next_at = ?, last_tick = coalesce(?, last_tick) "
                "WHERE name = ? AND next_at = ? AND paused = 0",
                (next_at, tick, name, expected),
            ).rowcount
            if not moved or job is None:
                return bool(moved)
            job_id, function, raw, args, where = job
            now = time.time()
            added = conn.execute(
                "INSERT INTO jobs (id, function, args, status, created, updated, "
                "queue, priority) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (job_id, function, args, now, now, where.queue, where.priority),
            ).rowcount
            if added:
                conn.execute(
                    "INSERT INTO entries (job_id, seq, entry) VALUES (?, 0, ?)",
                    (job_id, raw),
                )
            return True

        return await self._engine.call(run, op="schedule tick", signal=WORK)
