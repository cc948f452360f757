"""The PostgreSQL store's claims, queue limits (see :mod:`._queue_claims`) and
schedules (see :mod:`duron._schedules`).

Claimers never queue behind each other for jobs of queues without limits: their
rows are taken with ``FOR UPDATE SKIP LOCKED``. A limited queue is counted and
taken under a transaction-level advisory lock of its own (queues in name
order, so two claims never wait for each other crosswise): read committed gives
each statement a fresh snapshot, so the count made once the lock is held sees
every claim of that queue committed before, and the next claim of it waits
for this one's commit. Rate limits read ``clock_timestamp()``, the time of the
statement, not of the transaction's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duron._jobstore import timestamp
from duron.contrib._queue_claims import Candidate, QueueLoad, best, queue_from_row, take
from duron.contrib._sqlqueues import SCHEDULE_COLUMNS
from duron.contrib._wakeups import WORK

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from duron._queues import Queue
    from duron._schedules import Schedule
    from duron.contrib._postgres_engine import Engine
    from duron.contrib._postgres_schema import Schema
    from duron.contrib._sqlqueues import ScheduleRow, TickJob

__all__ = ["PostgresQueues"]

_ClaimRow = tuple[str, str, int, Any, Any]

_RUNNABLE = (
    "((status IN ('pending', 'running') AND (wake_at IS NULL OR wake_at <= now())) "
    "OR (status = 'suspended' AND wake_at <= now())) AND function IS NOT NULL "
    "AND (lease_expires IS NULL OR lease_expires < now() OR lease_owner = %s) "
    "AND NOT id = ANY(%s) "
)
_ORDER = "ORDER BY priority DESC, created, id LIMIT %s FOR UPDATE SKIP LOCKED"


class PostgresQueues:
    """The claim, queue and schedule statements of :class:`~duron.contrib.storage.PostgresStore`."""

    _engine: Engine
    _schema: Schema
    owner: str
    lease: float

    async def _claim_rows(
        self,
        limit: int,
        mine: list[str],
        functions: tuple[str, ...] | None,
        queues: tuple[str, ...] | None,
    ) -> list[_ClaimRow]:
        # Rows another worker is claiming, or another writer is appending to, are
        # skipped, not waited for. A lease of this store object that it no longer
        # holds (its release failed while the server was away) is taken back.
        q = self._schema.q
        schema = self._schema.name
        owner, lease = self.owner, self.lease
        where, params = _RUNNABLE, [owner, mine]
        if functions is not None:  # its own statement: the index by function
            where += "AND function = ANY(%s) "
            params.append(list(functions))
        if queues is not None:
            where += "AND queue = ANY(%s) "
            params.append(list(queues))
        take_rows = (
            f"UPDATE {q}.jobs AS j SET status = 'running', lease_owner = %s, "
            "lease_expires = now() + make_interval(secs => %s), "
            "epoch = j.epoch + 1, updated = now(), wake_at = NULL, "
            "started = coalesce(j.started, clock_timestamp()) "
        )
        returning = "RETURNING j.id, j.function, j.epoch, j.cancel_requested, j.created"

        async def run(conn: AsyncConnection[Any]) -> list[_ClaimRow]:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT name, concurrency, rate_starts, rate_per "
                    f"FROM {q}.queues WHERE concurrency IS NOT NULL "
                    "OR rate_starts IS NOT NULL ORDER BY name",
                    prepare=True,
                )
                limited = [
                    queue
                    for queue in map(queue_from_row, await cur.fetchall())
                    if queues is None or queue.name in queues
                ]
                if not limited:  # one statement, as fast as a claim can be
                    cur = await conn.execute(
                        f"WITH c AS (SELECT id FROM {q}.jobs WHERE {where}{_ORDER}) "
                        f"{take_rows}FROM c WHERE j.id = c.id {returning}",
                        (*params, limit, owner, lease),
                        prepare=True,
                    )
                    return await cur.fetchall()
                cols = (
                    "SELECT id, priority, created, status = 'running', "
                    f"started IS NOT NULL FROM {q}.jobs WHERE "
                )
                cur = await conn.execute(
                    f"{cols}{where}AND NOT queue = ANY(%s) {_ORDER}",
                    (*params, [x.name for x in limited], limit),
                )
                found = [Candidate(*row) for row in await cur.fetchall()]
                for queue in limited:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))",
                        (f"duron:{schema}:queue:{queue.name}",),
                    )
                    per = 0.0 if queue.rate_limit is None else queue.rate_limit.per
                    cur = await conn.execute(
                        f"SELECT (SELECT count(*) FROM {q}.jobs WHERE queue = %s "
                        "AND status = 'running'), (SELECT count(*) FROM "
                        f"{q}.jobs WHERE queue = %s AND %s AND started > "
                        "clock_timestamp() - make_interval(secs => %s))",
                        (queue.name, queue.name, queue.rate_limit is not None, per),
                    )
                    counts = await cur.fetchone()
                    assert counts is not None
                    cur = await conn.execute(
                        f"{cols}{where}AND queue = %s {_ORDER}",
                        (*params, queue.name, limit),
                    )
                    rows = await cur.fetchall()
                    load = QueueLoad(queue, int(counts[0]), int(counts[1]))
                    found += take(load, (Candidate(*r) for r in rows))
                chosen = [c.id for c in best(found, limit)]
                if not chosen:
                    return []
                cur = await conn.execute(
                    f"{take_rows}WHERE j.id = ANY(%s) {returning}",
                    (owner, lease, chosen),
                )
                return await cur.fetchall()

        return await self._engine.call(run, op="claim")

    async def _set_queue(self, queue: Queue) -> None:
        q = self._schema.q
        rate = queue.rate_limit

        async def run(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                f"INSERT INTO {q}.queues (name, concurrency, rate_starts, rate_per) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "concurrency = excluded.concurrency, rate_starts = "
                "excluded.rate_starts, rate_per = excluded.rate_per, updated = now()",
                (
                    queue.name,
                    queue.concurrency,
                    None if rate is None else rate.starts,
                    None if rate is None else rate.per,
                ),
            )

        await self._engine.call(run, op="set queue", signal=WORK, retry=True)

    async def _queue_rows(self) -> list[tuple[Any, ...]]:
        q = self._schema.q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                "SELECT name, concurrency, rate_starts, rate_per "
                f"FROM {q}.queues ORDER BY name"
            )
            return await cur.fetchall()

        return await self._engine.call(run, op="list queues", retry=True)

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
        q, s = self._schema.q, schedule

        async def run(conn: AsyncConnection[Any]) -> None:
            # Every SET expression reads the row as it was.
            await conn.execute(
                f"INSERT INTO {q}.schedules ({SCHEDULE_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, false, %s, NULL) "
                "ON CONFLICT (name) DO UPDATE SET function = excluded.function, "
                "args = excluded.args, missed = excluded.missed, "
                "grace = excluded.grace, queue = excluded.queue, "
                "priority = excluded.priority, updated = now(), "
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
                    timestamp(next_at),
                ),
            )

        await self._engine.call(run, op="add schedule", retry=True)

    async def _schedule_rows(self, name: str | None) -> list[ScheduleRow]:
        q = self._schema.q

        async def run(conn: AsyncConnection[Any]) -> list[ScheduleRow]:
            if name is None:
                cur = await conn.execute(
                    f"SELECT {SCHEDULE_COLUMNS} FROM {q}.schedules ORDER BY name"
                )
            else:
                cur = await conn.execute(
                    f"SELECT {SCHEDULE_COLUMNS} FROM {q}.schedules WHERE name = %s",
                    (name,),
                )
            return await cur.fetchall()

        return await self._engine.call(run, op="list schedules", retry=True)

    async def _pause(self, name: str, paused: bool, next_at: float | None) -> bool:
        q = self._schema.q
        at = None if next_at is None else timestamp(next_at)

        async def run(conn: AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                f"UPDATE {q}.schedules SET paused = %s, next_at = "
                "coalesce(%s::timestamptz, next_at), updated = now() WHERE name = %s",
                (paused, at, name),
            )
            return cur.rowcount > 0

        return await self._engine.call(run, op="pause schedule", retry=True)

    async def _remove_schedule(self, name: str) -> bool:
        q = self._schema.q

        async def run(conn: AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                f"DELETE FROM {q}.schedules WHERE name = %s", (name,)
            )
            return cur.rowcount > 0

        return await self._engine.call(run, op="remove schedule", retry=True)

    async def _due_rows(self, functions: tuple[str, ...]) -> list[ScheduleRow]:
        q = self._schema.q

        async def run(conn: AsyncConnection[Any]) -> list[ScheduleRow]:
            cur = await conn.execute(
                f"SELECT {SCHEDULE_COLUMNS} FROM {q}.schedules WHERE NOT paused "
                "AND next_at <= now() AND function = ANY(%s)",
                (list(functions),),
                prepare=True,
            )
            return await cur.fetchall()

        if not functions:
            return []
        return await self._engine.call(run, op="schedules", retry=True)

    async def _fire(
        self,
        name: str,
        expected: Any,
        next_at: float,
        tick: float | None,
        job: TickJob | None,
    ) -> bool:
        q = self._schema.q
        last = None if tick is None else timestamp(tick)

        async def run(conn: AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                cur = await conn.execute(
                    f"UPDATE {q}.schedules SET next_at = %s, last_tick = "
                    "coalesce(%s::timestamptz, last_tick) WHERE name = %s "
                    "AND next_at = %s AND NOT paused",
                    (timestamp(next_at), last, name, expected),
                )
                if not cur.rowcount or job is None:
                    return cur.rowcount > 0
                job_id, function, raw, args, where = job
                await conn.execute(
                    f"WITH j AS (INSERT INTO {q}.jobs (id, function, args, status, "
                    "queue, priority) VALUES (%s, %s, %s, 'pending', %s, %s) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id) "
                    f"INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                    "SELECT id, 0, 0, %s FROM j",
                    (job_id, function, args, where.queue, where.priority, raw),
                )
                return True

        return await self._engine.call(run, op="schedule tick", signal=WORK)
