"""One job's log in a :class:`~duron.contrib.storage.PostgresStore`: its lease and appends.

``acquire()`` takes the job's lease (or adopts the one a worker of the same store
object claimed); ``append()`` hands the entries to the store's next group commit,
which checks the lease epoch in the statement that writes them; an ``end`` entry
sets the job's status and result in that same statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from duron._errors import LeaseLostError, LogLockedError
from duron.contrib._postgres_engine import AppendRequest, read_lost_detail
from duron.contrib._sqllog import SQLLog, archived_runs, archived_seq, lost_detail
from duron.contrib._wakeups import DONE, WORK, host_caller

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    # The base class's type argument: ruff does not see a name used there.
    from duron.contrib._postgres import PostgresStore  # noqa: F401
    from duron.contrib._postgres_engine import Engine
    from duron.contrib._sqllog import Ending, Started, Suspension
    from duron.contrib._sqlstore import LogAccess

__all__ = ["PostgresLog"]


class PostgresLog(SQLLog["PostgresStore"]):
    """One job's log in a :class:`PostgresStore`. Get it from ``store.log(job_id)``.

    ``acquire()`` takes the job's lease (or adopts the one a worker of the same
    store object claimed); ``append()`` goes into the store's next group commit,
    which checks the lease epoch in the same statement; an ``end`` entry sets the
    job's status and result with it.
    """

    _access: LogAccess[Engine]

    async def _inbox_rows(
        self, after: int, done: list[int], limit: int
    ) -> list[tuple[Any, ...]]:
        job_id, q = self.job_id, self._access.q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            if done:
                await conn.execute(
                    f"DELETE FROM {q}.inbox WHERE job_id = %s AND seq = ANY(%s)",
                    (job_id, done),
                )
            cur = await conn.execute(
                f"SELECT seq, kind, target, data, error FROM {q}.inbox "
                "WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (job_id, after, limit),
                prepare=True,
            )
            return await cur.fetchall()

        return await self._access.engine.call(
            run, op="read inbox", job=job_id, retry=True
        )

    async def _adopt(self, epoch: int) -> int:
        job_id, owner, q = self.job_id, self.store.owner, self._access.q

        # One statement: the claim committed before it, so every entry of an
        # older epoch that will ever land is already visible.
        async def adopt(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                f"SELECT lease_owner, epoch, (SELECT coalesce(max(seq) + 1, 0) "
                f"FROM {q}.entries WHERE job_id = %s) FROM {q}.jobs "
                "WHERE id = %s",
                (job_id, job_id),
                prepare=True,
            )
            row = await cur.fetchone()
            if row is None or row[0] != owner or row[1] != epoch:
                raise LeaseLostError(
                    job=job_id, detail="the lease this worker claimed is gone"
                )
            return int(row[2])

        return await self._access.engine.call(
            adopt, op="acquire", job=job_id, retry=True
        )

    async def _take(self) -> tuple[int, int]:
        store = self.store
        job_id, owner, lease, q = self.job_id, store.owner, store.lease, self._access.q

        async def take(conn: AsyncConnection[Any]) -> tuple[int, int]:
            async with conn.transaction():
                cur = await conn.execute(
                    f"INSERT INTO {q}.jobs AS j (id, status, lease_owner, "
                    "lease_expires, epoch) VALUES (%s, 'running', %s, "
                    "now() + make_interval(secs => %s), 1) "
                    "ON CONFLICT (id) DO UPDATE SET lease_owner = %s, "
                    "lease_expires = now() + make_interval(secs => %s), "
                    "epoch = j.epoch + 1, updated = now(), status = CASE "
                    "j.status WHEN 'pending' THEN 'running' ELSE j.status END "
                    "WHERE j.lease_owner IS NULL OR j.lease_owner = %s "
                    "OR j.lease_expires < now() RETURNING j.epoch",
                    (job_id, owner, lease, owner, lease, owner),
                )
                row = await cur.fetchone()
                if row is None:
                    cur = await conn.execute(
                        f"SELECT lease_owner FROM {q}.jobs WHERE id = %s", (job_id,)
                    )
                    holder = await cur.fetchone()
                    raise LogLockedError(
                        job=job_id, holder=holder[0] if holder else None
                    )
                cur = await conn.execute(
                    f"SELECT coalesce(max(seq) + 1, 0) FROM {q}.entries "
                    "WHERE job_id = %s",
                    (job_id,),
                )
                seq = await cur.fetchone()
                assert seq is not None
                return int(row[0]), int(seq[0])

        return await self._access.engine.call(take, op="acquire", job=job_id)

    async def _renew(self, epoch: int) -> None:
        store = self.store
        job_id, owner, lease, q = self.job_id, store.owner, store.lease, self._access.q
        schema = self._access.engine.schema

        async def renew(conn: AsyncConnection[Any]) -> None:
            cur = await conn.execute(
                f"UPDATE {q}.jobs SET lease_expires = now() + "
                "make_interval(secs => %s) WHERE id = %s AND lease_owner = %s "
                "AND epoch = %s",
                (lease, job_id, owner, epoch),
            )
            if not cur.rowcount:
                raise LeaseLostError(
                    job=job_id,
                    detail=await read_lost_detail(conn, schema, job_id, epoch),
                )

        await self._access.engine.call(renew, op="renew lease", job=job_id, retry=True)

    async def _unlease(
        self, epoch: int, *, wrote: bool, suspension: Suspension | None = None
    ) -> None:
        job_id, owner, q = self.job_id, self.store.owner, self._access.q

        async def run(conn: AsyncConnection[Any]) -> None:
            unlease = (
                f"UPDATE {q}.jobs SET lease_owner = NULL, lease_expires = NULL, "
                "updated = now(), wake_at = NULL, status = CASE status WHEN "
                "'running' THEN 'pending' ELSE status END "
                "WHERE id = %s AND lease_owner = %s AND epoch = %s"
            )
            if suspension is not None:
                async with conn.transaction():
                    # The row lock first: input stored meanwhile has committed
                    # (a sender updates this row too), and the next statement,
                    # with a snapshot of its own, sees it.
                    await conn.execute(
                        f"SELECT 1 FROM {q}.jobs WHERE id = %s FOR UPDATE", (job_id,)
                    )
                    cur = await conn.execute(
                        f"SELECT cancel_requested OR EXISTS (SELECT 1 FROM {q}.inbox "
                        f"WHERE job_id = %s AND seq > %s) FROM {q}.jobs WHERE id = %s",
                        (job_id, suspension.seen, job_id),
                    )
                    row = await cur.fetchone()
                    if row is not None and not row[0]:
                        await conn.execute(
                            f"UPDATE {q}.jobs SET lease_owner = NULL, "
                            "lease_expires = NULL, updated = now(), "
                            "wake_at = to_timestamp(%s), status = CASE status "
                            "WHEN 'running' THEN 'suspended' ELSE status END "
                            "WHERE id = %s AND lease_owner = %s AND epoch = %s",
                            (suspension.until, job_id, owner, epoch),
                        )
                    else:
                        await conn.execute(unlease, (job_id, owner, epoch))
                return
            if wrote:
                await conn.execute(unlease, (job_id, owner, epoch), prepare=True)
                return
            async with conn.transaction():
                await conn.execute(unlease, (job_id, owner, epoch))
                # A log opened but never written leaves nothing behind.
                await conn.execute(
                    f"DELETE FROM {q}.jobs WHERE id = %s AND function IS NULL "
                    "AND lease_owner IS NULL AND NOT EXISTS "
                    f"(SELECT 1 FROM {q}.entries WHERE job_id = %s)",
                    (job_id, job_id),
                )

        await self._access.engine.call(
            run, op="release", signal=WORK, job=job_id, retry=True
        )

    async def _continue(
        self,
        epoch: int,
        start: int,
        entries: Sequence[bytes],
        first: bytes,
        inbox_done: list[int],
    ) -> None:
        job_id, owner, q = self.job_id, self.store.owner, self._access.q
        rows = [(job_id, start + i, epoch, e.decode()) for i, e in enumerate(entries)]

        async def run(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT 1 FROM {q}.jobs WHERE id = %s AND lease_owner = %s "
                    "AND epoch = %s FOR UPDATE",
                    (job_id, owner, epoch),
                )
                if await cur.fetchone() is None:
                    cur = await conn.execute(
                        f"SELECT lease_owner, epoch, status FROM {q}.jobs "
                        "WHERE id = %s",
                        (job_id,),
                    )
                    raise LeaseLostError(
                        job=job_id, detail=lost_detail(await cur.fetchone(), epoch)
                    )
                async with conn.cursor() as c:
                    await c.executemany(
                        f"INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                        "VALUES (%s, %s, %s, %s)",
                        rows,
                    )
                cur = await conn.execute(
                    f"SELECT max(seq) FROM {q}.entries WHERE job_id = %s AND seq < 0",
                    (job_id,),
                )
                top = await cur.fetchone()
                shift = archived_seq(archived_runs(None if top is None else top[0]))
                await conn.execute(
                    f"UPDATE {q}.entries SET seq = seq + %s "
                    "WHERE job_id = %s AND seq >= 0",
                    (shift, job_id),
                )
                await conn.execute(
                    f"INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                    "VALUES (%s, 0, %s, %s)",
                    (job_id, epoch, first.decode()),
                )
                if inbox_done:
                    await conn.execute(
                        f"DELETE FROM {q}.inbox WHERE job_id = %s AND seq = ANY(%s)",
                        (job_id, inbox_done),
                    )
                await conn.execute(
                    f"UPDATE {q}.jobs SET updated = now() WHERE id = %s", (job_id,)
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
        req = AppendRequest(
            call=host_caller("PostgreSQL store"),
            event=anyio.Event(),
            job=self.job_id,
            epoch=epoch,
            seq=start,
            entries=[e.decode() for e in entries],
        )
        if started is not None:
            req.function = started.function
            req.args = started.args
        if ending is not None:
            req.status = ending.status
            req.outcome_result = ending.result
            req.outcome_error = ending.error
            req.signal = DONE
        await self._access.engine.append(req)
