"""The PostgreSQL store's inboxes: storing input for a job, and hearing of it.

Storing an item locks the job's row (``FOR UPDATE``), so the items of one job are
numbered in the order they commit, checks it (:func:`~duron._inbox.refusal`),
inserts it and calls ``pg_notify`` in the same transaction: the notification goes
out when the item is committed. :class:`InputListener` holds one connection that
``LISTEN``s on the store's channel while a job of this store object waits for
input, and rings that job's feed; after a broken connection it rings every feed
(input may have arrived unheard) and listens again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from duron._errors import JobNotFoundError
from duron._inbox import Sending, entry_patterns, refusal
from duron.contrib._postgres_schema import channel
from duron.contrib._sqlstore import WAKE
from duron.contrib._wakeups import INBOX, WORK

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from duron.contrib._postgres_engine import Engine
    from duron.contrib._sqlinbox import JobHead
    from duron.contrib._wakeups import Watchers

__all__ = ["InputListener", "PostgresInbox", "channel"]

_log = logging.getLogger("duron")

_RETRY = 1.0  # seconds before listening again after the connection broke


class PostgresInbox:
    """The inbox statements of :class:`~duron.contrib.storage.PostgresStore`."""

    label: str
    _engine: Engine

    @property
    def _q(self) -> str:
        raise NotImplementedError  # pragma: no cover - the store defines it

    async def _job_head(self, job_id: str) -> JobHead | None:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> JobHead | None:
            cur = await conn.execute(
                f"SELECT j.status, j.function, e.entry FROM {q}.jobs AS j "
                f"LEFT JOIN {q}.entries AS e ON e.job_id = j.id AND e.seq = 0 "
                "WHERE j.id = %s",
                (job_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            first = row[2].encode() if row[2] is not None else None
            return row[0], row[1], first

        return await self._engine.call(run, op="read", job=job_id, retry=True)

    async def _facts(
        self,
        conn: AsyncConnection[Any],
        job_id: str,
        op_id: int,
        target: str,
        *,
        lock: bool,
    ) -> tuple[str, str | None, list[tuple[int, str]], list[str]]:
        q = self._q
        cur = await conn.execute(
            f"SELECT status, function FROM {q}.jobs WHERE id = %s"
            + (" FOR UPDATE" if lock else ""),
            (job_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        started, done = entry_patterns(op_id)
        cur = await conn.execute(
            f"SELECT seq, entry FROM {q}.entries WHERE job_id = %s AND seq >= 0 "
            "AND (entry LIKE %s OR entry LIKE %s) ORDER BY seq",
            (job_id, started, done),
        )
        entries = [(int(seq), entry) for seq, entry in await cur.fetchall()]
        cur = await conn.execute(
            f"SELECT kind FROM {q}.inbox WHERE job_id = %s AND target = %s",
            (job_id, target),
        )
        queued = [kind for (kind,) in await cur.fetchall()]
        return row[0], row[1], entries, queued

    async def _op_facts(
        self, job_id: str, op_id: int, target: str
    ) -> tuple[str, list[tuple[int, str]], list[str]]:
        async def run(
            conn: AsyncConnection[Any],
        ) -> tuple[str, list[tuple[int, str]], list[str]]:
            status, _, entries, queued = await self._facts(
                conn, job_id, op_id, target, lock=False
            )
            return status, entries, queued

        return await self._engine.call(run, op="read", job=job_id, retry=True)

    async def _inbox_put(self, sending: Sending) -> int:
        q, job_id = self._q, sending.job_id
        notify = channel(self._engine.schema.name)

        async def run(conn: AsyncConnection[Any]) -> int:
            async with conn.transaction():
                status, function, entries, queued = await self._facts(
                    conn, job_id, sending.op_id, sending.target, lock=True
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
                cur = await conn.execute(
                    f"WITH n AS (UPDATE {q}.jobs SET inbox_seq = inbox_seq + 1, "
                    f"{WAKE} WHERE id = %s RETURNING inbox_seq) "
                    f"INSERT INTO {q}.inbox (job_id, seq, kind, target, data, error) "
                    "SELECT %s, inbox_seq, %s, %s, %s, %s FROM n RETURNING seq",
                    (
                        job_id,
                        job_id,
                        sending.kind,
                        sending.target,
                        sending.data,
                        sending.error,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                await conn.execute("SELECT pg_notify(%s, %s)", (notify, job_id))
                return int(row[0])

        return await self._engine.call(run, op="send", signal=INBOX | WORK, job=job_id)


class InputListener:
    """One ``LISTEN`` connection that rings the feeds of the jobs input is stored
    for (see the module docstring). Runs on the engine's loop."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[AsyncConnection[Any]]],
        watchers: Watchers,
        schema: str,
    ) -> None:
        self._connect = connect
        self._watchers = watchers
        self._channel = channel(schema)

    async def run(self) -> None:
        """Listen until cancelled, connecting again after a failure."""
        while True:
            try:
                conn = await self._connect()
                try:
                    quoted = '"' + self._channel.replace('"', '""') + '"'
                    await conn.execute(f"LISTEN {quoted}")
                    # Input stored while nobody listened: every feed looks again.
                    self._watchers.ring(None)
                    async for note in conn.notifies():
                        self._watchers.ring([note.payload])
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server went away: listen again later
                _log.info("duron: PostgreSQL store: listening for input: %s", exc)
                self._watchers.ring(None)
                await asyncio.sleep(_RETRY)
