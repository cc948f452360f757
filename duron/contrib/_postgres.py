"""Many jobs on many machines: the job table and the logs in PostgreSQL.

Two tables in a schema of their own (``duron`` by default): ``jobs`` (one row per
job: function, arguments, status, result or error, lease owner, lease expiry,
epoch) and ``entries`` (job id, sequence number, the epoch of the writer, the
entry's JSON text: the same bytes a file log holds on one line). A third,
``schema_version``, records which migrations ran; ``migrate()`` creates them.

PostgreSQL is the authority for who runs which job. A worker claims a job with
``FOR UPDATE SKIP LOCKED`` (claimers never queue behind each other), which bumps
the job's epoch and gives it a lease measured by the database's clock. The lease
is renewed while the job runs. Every append checks the epoch in the statement that
writes the entries, under a row lock, so a worker that stalled past its lease
(GC pause, SIGSTOP, a network partition) and was taken over gets
:class:`~duron.LeaseLostError` instead of writing.

psycopg is imported when a store is first used, never by ``import duron``.
"""

from __future__ import annotations

import os
import re
import socket
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio
import orjson

from duron._errors import (
    DuplicateJobError,
    JobCancelledError,
    JobNotFoundError,
    LeaseLostError,
    LogLockedError,
    StorageError,
    UsageError,
)
from duron._exceptions import error_info
from duron._jobstore import (
    Claim,
    Heartbeat,
    JobInfo,
    JobStatus,
    check_job_id,
    check_resubmit,
    decode_error,
    end_outcome,
    fork_prefix,
    is_entry_type,
    job_entry_for,
    new_job_id,
    outcome_of,
    parse_job_entry,
    seconds,
    statuses,
)
from duron._log import encode_entry
from duron.contrib._postgres_engine import AppendRequest, Engine
from duron.contrib._postgres_schema import SCHEMA_VERSION, Schema, migrate
from duron.contrib._wakeups import DONE, WORK, host_caller

if TYPE_CHECKING:
    from datetime import timedelta

    from psycopg import AsyncConnection

    from duron._durable import DurableFn

__all__ = ["PostgresLog", "PostgresStore", "store_from_url"]

_T = TypeVar("_T")
_READ_CHUNK = 1000
_TERMINAL_SQL = "('completed', 'failed', 'cancelled')"
_JOB_COLUMNS = (
    "id, function, args, status, result, error, created, updated, lease_owner, "
    "lease_expires, epoch, cancel_requested, forked_from"
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_INSTALL = (
    "PostgreSQL storage needs psycopg 3 and psycopg-pool: pip install 'duron[postgres]'"
)


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc


def _label(dsn: str, schema: str) -> str:
    """The DSN as a URL without its password (what messages and the CLI show)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception as exc:
        raise ValueError(
            f"{_hide_password(dsn)!r} is not a PostgreSQL connection string "
            f"({' '.join(str(exc).split())}); write "
            "postgresql://user:password@host:5432/dbname"
        ) from exc
    user = info.get("user")
    host = info.get("host") or "localhost"
    port = info.get("port")
    where = f"{user}@{host}" if user else str(host)
    if port:
        where += f":{port}"
    label = f"postgresql://{where}/{info.get('dbname') or ''}"
    if schema != "duron":
        label += f"?schema={schema}"
    return label


def store_from_url(url: str, **options: Any) -> PostgresStore:
    """The store a ``postgresql://...`` URL names; a ``schema`` query parameter
    (``?schema=app_jobs``) picks the schema, the rest goes to libpq."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = [value for key, value in query if key == "schema"]
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    dsn = urlunsplit(parts._replace(query=rest))
    return PostgresStore(dsn, schema=schema[-1] if schema else "duron", **options)


def _hide_password(dsn: str) -> str:
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


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
    return JobInfo(
        id=job_id,
        function=function,
        status=status,
        args=orjson.loads(args) if args is not None else None,
        result=orjson.loads(result) if result is not None else None,
        error=decode_error(error),
        created=created,
        updated=updated,
        lease_owner=owner,
        lease_expires=expires,
        epoch=epoch,
        cancel_requested=bool(cancel),
        forked_from=forked_from,
    )


class PostgresStore:
    """Many jobs and their logs in PostgreSQL, shared by workers on many machines.

    Create one store object per database per process and share it: its connection
    pool runs on a thread of its own, and the appends of every job it runs are
    batched into one statement per round (group commit). Any number of processes
    on any number of machines may use the same database; leases and epochs keep
    two of them from running, or writing to, the same job.

    The tables are created by :meth:`migrate` (or ``duron db migrate URL``), once,
    before the store is used; a store whose schema is missing says so.

    Example:
        ```python
        store = PostgresStore("postgresql://app:secret@db.internal/app")
        await store.migrate()  # once, at deploy time
        job_id = await store.submit(checkout, order, job_id="order-42")
        async with duron.Worker(store, [checkout]):
            print(await store.result(job_id))
        ```

    Args:
        dsn: A libpq connection string or URL (``postgresql://user:pw@host/db``).
        schema: The PostgreSQL schema that holds Duron's tables (a plain
            identifier: letters, digits and ``_``).
        lease: Seconds a job's lease lasts without renewal: how long the jobs of
            a crashed or stalled worker wait before another worker takes them.
        pool_size: The most connections this store object opens.
        connect_timeout: Seconds to wait for a connection.

    Raises:
        ImportError: psycopg is not installed (``pip install 'duron[postgres]'``).
        ValueError: ``dsn`` is not a connection string, ``schema`` not an
            identifier, or ``lease`` / ``pool_size`` out of range.
        SchemaError: (on first use) The schema is missing or from a newer Duron.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "duron",
        lease: float = 30.0,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        _require_driver()
        if not _IDENTIFIER.fullmatch(str(schema)):
            raise ValueError(
                f"schema must be a plain PostgreSQL identifier (letters, digits and "
                f"_, not starting with a digit, at most 63 characters), not {schema!r}"
            )
        if not lease > 0:
            raise ValueError(f"lease must be a number of seconds > 0, not {lease!r}")
        if pool_size < 2:
            raise ValueError(
                f"pool_size must be at least 2 (appends and the other requests "
                f"run side by side), not {pool_size!r}"
            )
        self.dsn = dsn
        self.schema = schema
        self.label = _label(dsn, schema)
        self.lease = float(lease)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._schema = Schema(schema)
        self._engine = Engine(
            dsn=dsn,
            label=self.label,
            schema=self._schema,
            owner=self.owner,
            lease_seconds=self.lease,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
        )
        self._attached: set[str] = set()
        # The thread holds no reference to the store: dropping the store stops it.
        weakref.finalize(self, self._engine.stop)

    # -- lifecycle -------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Create Duron's schema and tables, or upgrade them to this Duron's version.

        Safe to run at every deploy and from several processes at once: applied
        migrations are recorded in ``schema_version`` and skipped, and concurrent
        runs wait for each other.

        Returns:
            The schema versions applied now (empty when it was up to date).

        Raises:
            SchemaError: The schema was written by a newer Duron.
            StorageError: The server cannot be reached, or refused the DDL.
        """
        label, schema = self.label, self._schema

        async def run(conn: AsyncConnection[Any]) -> list[int]:
            return await migrate(conn, label, schema)

        return await self._engine.direct(run)

    async def close(self) -> None:
        """Close the connection pool once queued work is done (idempotent)."""
        await self._engine.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _q(self) -> str:
        return self._schema.q

    # -- one job's log --------------------------------------------------------------

    def log(self, job_id: str) -> PostgresLog:
        """The log of one job, as a :class:`~duron.LogStorage`.

        ``checkout.invoke(store.log("order-42"))`` runs that job here and now (the
        job's row is created by ``acquire()`` if it does not exist).
        """
        return PostgresLog(self, check_job_id(job_id))

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
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> str:
            cur = await conn.execute(
                f"WITH j AS (INSERT INTO {q}.jobs (id, function, args, status) "
                "VALUES (%s, %s, %s, 'pending') ON CONFLICT (id) DO NOTHING "
                f"RETURNING id) INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                "SELECT id, 0, 0, %s FROM j RETURNING job_id",
                (jid, entry.fn, args_json, raw),
                prepare=True,
            )
            if await cur.fetchone() is not None:
                return jid
            cur = await conn.execute(
                f"SELECT entry FROM {q}.entries WHERE job_id = %s AND seq = 0", (jid,)
            )
            first = await cur.fetchone()
            recorded = parse_job_entry(first[0], jid) if first else None
            if recorded is None:
                raise DuplicateJobError(
                    job=jid,
                    recorded="a log opened with store.log() that holds no job yet",
                    requested=f"{fn.name}(...)",
                )
            check_resubmit(jid, entry, recorded)
            return jid

        return await self._engine.call(run, signal=WORK)

    async def get(self, job_id: str) -> JobInfo:
        """The job's row.

        Raises:
            JobNotFoundError: No such job.
        """
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> JobInfo:
            cur = await conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM {q}.jobs WHERE id = %s",
                (job_id,),
                prepare=True,
            )
            row = await cur.fetchone()
            if row is None:
                raise JobNotFoundError(job=job_id, store=self.label)
            return _job_info(row)

        return await self._engine.call(run)

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
            where = "WHERE status = ANY(%s)"
            params.append(statuses(status, ended=False))
        sql = f"SELECT {_JOB_COLUMNS} FROM {self._q}.jobs {where} ORDER BY created, id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(int(limit))

        async def run(conn: AsyncConnection[Any]) -> list[JobInfo]:
            cur = await conn.execute(sql, params)
            return [_job_info(row) for row in await cur.fetchall()]

        return await self._engine.call(run)

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

        A job ending through this store object wakes the waiter at once; one
        ending in another process is seen by polling (every 10 ms, backing off
        to 1 s).

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
        q = self._q
        error = error_info(
            JobCancelledError(f"job {job_id} was cancelled before it started")
        )
        error_json = orjson.dumps(error.to_json()).decode()

        async def run(conn: AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT status, lease_owner IS NOT NULL AND lease_expires >= now() "
                    f"FROM {q}.jobs WHERE id = %s FOR UPDATE",
                    (job_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise JobNotFoundError(job=job_id, store=self.label)
                status, leased = row
                if status in ("completed", "failed", "cancelled"):
                    return False
                cur = await conn.execute(
                    f"SELECT 1 FROM {q}.entries WHERE job_id = %s AND seq > 0 LIMIT 1",
                    (job_id,),
                )
                if await cur.fetchone() is None and not leased:
                    await conn.execute(
                        f"UPDATE {q}.jobs SET status = 'cancelled', error = %s, "
                        "lease_owner = NULL, lease_expires = NULL, updated = now() "
                        "WHERE id = %s",
                        (error_json, job_id),
                    )
                else:
                    await conn.execute(
                        f"UPDATE {q}.jobs SET cancel_requested = true, "
                        "updated = now() WHERE id = %s",
                        (job_id,),
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
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT status, lease_owner, lease_expires >= now() "
                    f"FROM {q}.jobs WHERE id = %s FOR UPDATE",
                    (job_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise JobNotFoundError(job=job_id, store=self.label)
                status, owner, live = row
                cur = await conn.execute(
                    f"SELECT entry FROM {q}.entries WHERE job_id = %s "
                    "ORDER BY seq DESC LIMIT 1",
                    (job_id,),
                )
                last = await cur.fetchone()
                ended = last is not None and is_entry_type(last[0].encode(), "end")
                if ended or status in ("completed", "cancelled"):
                    raise UsageError(
                        f"job {job_id} ended ({status}): it cannot run again; fork "
                        "it to re-run it from a step (store.fork / `duron jobs fork`)"
                    )
                if owner is not None and live:
                    raise UsageError(
                        f"job {job_id} is running: {owner} holds its lease; cancel "
                        "it or wait for it"
                    )
                await conn.execute(
                    f"UPDATE {q}.jobs SET status = 'pending', error = NULL, "
                    "lease_owner = NULL, lease_expires = NULL, updated = now() "
                    "WHERE id = %s",
                    (job_id,),
                )

        await self._engine.call(run, signal=WORK)

    async def fork(self, job_id: str, *, at: int, new_id: str | None = None) -> str:
        """A new pending job that re-runs ``job_id`` from operation ``at``.

        Operations are numbered from 0 in the order the durable code issued them
        (the ``id`` of their log entries; ``duron inspect`` shows them). The new
        job's log is the old one's prefix up to the first entry of operation
        ``at``: operations before it that had completed by then replay without
        running, everything from operation ``at`` on runs live. ``at=0`` re-runs
        the whole job with the same arguments.

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
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> str:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT 1 FROM {q}.jobs WHERE id = %s", (job_id,)
                )
                if await cur.fetchone() is None:
                    raise JobNotFoundError(job=job_id, store=self.label)
                cur = await conn.execute(
                    f"SELECT seq, entry FROM {q}.entries WHERE job_id = %s "
                    "ORDER BY seq",
                    (job_id,),
                )
                rows = await cur.fetchall()
                prefix = fork_prefix(
                    ((seq, text.encode()) for seq, text in rows), job_id, at
                )
                first = parse_job_entry(prefix[0], job_id)
                assert first is not None
                cur = await conn.execute(
                    f"INSERT INTO {q}.jobs (id, function, args, status, forked_from) "
                    "VALUES (%s, %s, %s, 'pending', %s) ON CONFLICT (id) DO NOTHING "
                    "RETURNING id",
                    (nid, first.fn, orjson.dumps(first.args).decode(), job_id),
                )
                if await cur.fetchone() is None:
                    raise DuplicateJobError(
                        job=nid,
                        recorded="another job",
                        requested=f"a fork of {job_id} at operation {at}",
                    )
                await conn.execute(
                    f"INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                    "SELECT %s, s.seq, 0, s.entry "
                    "FROM unnest(%s::bigint[], %s::text[]) AS s(seq, entry)",
                    (
                        nid,
                        list(range(len(prefix))),
                        [raw.decode() for raw in prefix],
                    ),
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
        age = seconds(older_than)
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                f"WITH gone AS (DELETE FROM {q}.jobs WHERE status = ANY(%s) "
                "AND updated < now() - make_interval(secs => %s) RETURNING id), "
                f"e AS (DELETE FROM {q}.entries WHERE job_id IN "
                "(SELECT id FROM gone)) SELECT count(*) FROM gone",
                (wanted, age),
            )
            row = await cur.fetchone()
            return 0 if row is None else int(row[0])

        return await self._engine.call(run)

    async def read_log(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The job's log entries, oldest first, as ``(seq, entry)``.

        Raises:
            JobNotFoundError: No such job.
        """
        q = self._q

        async def exists(conn: AsyncConnection[Any]) -> bool:
            cur = await conn.execute(f"SELECT 1 FROM {q}.jobs WHERE id = %s", (job_id,))
            return await cur.fetchone() is not None

        if not await self._engine.call(exists):
            raise JobNotFoundError(job=job_id, store=self.label)
        async for item in self._read(job_id):
            yield item

    async def _read(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        q = self._q
        start = 0
        while True:

            async def chunk(
                conn: AsyncConnection[Any], start: int = start
            ) -> list[tuple[int, bytes]]:
                cur = await conn.execute(
                    f"SELECT seq, entry FROM {q}.entries WHERE job_id = %s "
                    "AND seq >= %s ORDER BY seq LIMIT %s",
                    (job_id, start, _READ_CHUNK),
                    prepare=True,
                )
                return [(seq, text.encode()) for seq, text in await cur.fetchall()]

            rows = await self._engine.call(chunk)
            for row in rows:
                yield row
            if len(rows) < _READ_CHUNK:
                return
            start = rows[-1][0] + 1

    # -- what a worker uses ---------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Take the leases of up to ``limit`` runnable jobs, oldest first.

        Runnable: pending, or running under a lease that expired (its process
        died or stalled). Each claim bumps the job's epoch. Rows another worker is
        claiming, or another writer is appending to, are skipped, not waited for;
        so are the jobs this store object holds (a lease that ran out while this
        process stalled is renewed, or lost to another owner, not claimed twice).
        """
        if limit <= 0:
            return []
        q = self._q
        owner, lease = self.owner, self.lease
        mine = list(self._engine.held)

        async def run(conn: AsyncConnection[Any]) -> list[Claim]:
            cur = await conn.execute(
                f"WITH c AS (SELECT id FROM {q}.jobs "
                "WHERE status IN ('pending', 'running') AND function IS NOT NULL "
                "AND (lease_expires IS NULL OR lease_expires < now()) "
                "AND NOT id = ANY(%s) "
                "ORDER BY created, id LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"UPDATE {q}.jobs AS j SET status = 'running', lease_owner = %s, "
                "lease_expires = now() + make_interval(secs => %s), "
                "epoch = j.epoch + 1, updated = now() FROM c WHERE j.id = c.id "
                "RETURNING j.id, j.function, j.epoch, j.cancel_requested, j.created",
                (mine, limit, owner, lease),
                prepare=True,
            )
            rows = await cur.fetchall()
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
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[str, str, int, bool]]:
            cur = await conn.execute(
                f"SELECT id, lease_owner, epoch, cancel_requested FROM {q}.jobs "
                "WHERE id = ANY(%s)",
                (ids,),
                prepare=True,
            )
            return await cur.fetchall()

        rows = {r[0]: r[1:] for r in await self._engine.call(run)}
        # Read after the reply: a job this store released meanwhile (it ended, or
        # stopped) is no longer held, and so not lost.
        held = self._engine.held
        lost = frozenset(
            j
            for j in ids
            if j in held
            and (j not in rows or rows[j][0] != self.owner or rows[j][1] != held[j])
        )
        cancel = frozenset(j for j in ids if j in rows and j not in lost and rows[j][2])
        return Heartbeat(lost, cancel)

    async def fail(self, job_id: str, epoch: int, error: BaseException) -> None:
        """Mark a job failed with ``error``, unless it ended or changed owner."""
        info = orjson.dumps(error_info(error).to_json()).decode()
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                f"UPDATE {q}.jobs SET status = 'failed', error = %s, "
                "lease_owner = NULL, lease_expires = NULL, cancel_requested = false, "
                "updated = now() "
                f"WHERE id = %s AND epoch = %s AND status NOT IN {_TERMINAL_SQL}",
                (info, job_id, epoch),
            )

        try:
            await self._engine.call(run, signal=DONE, job=job_id)
        finally:
            if self._engine.held.get(job_id) == epoch:
                del self._engine.held[job_id]

    async def wait_for_work(self, timeout: float) -> None:
        """Return when this store object submitted, requeued or cancelled a job, or
        after ``timeout`` seconds (other processes' submissions are seen by
        polling)."""
        await self._engine.wait_signal(WORK, timeout)

    @property
    def flushes(self) -> int:
        """Append statements this store object ran (group commit keeps it small)."""
        return self._engine.stats.flushes

    @property
    def appends(self) -> int:
        """Appends (one job's batch of entries each) those statements carried."""
        return self._engine.stats.appends

    def __repr__(self) -> str:
        return f"<PostgresStore {self.label} schema version {SCHEMA_VERSION}>"


class PostgresLog:
    """One job's log in a :class:`PostgresStore`. Get it from ``store.log(job_id)``.

    ``acquire()`` takes the job's lease (or adopts the one a worker of the same
    store object claimed); ``append()`` goes into the store's next group commit,
    which checks the lease epoch in the same statement; an ``end`` entry sets the
    job's status and result with it.
    """

    def __init__(self, store: PostgresStore, job_id: str) -> None:
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
        owner, lease, q = store.owner, store.lease, store._q
        held = engine.held.get(job_id)
        store._attached.add(job_id)
        try:
            if held is not None:
                # A worker of this store claimed the job: write under its lease.
                # One statement: the claim committed before it, so every entry
                # of an older epoch that will ever land is already visible.
                async def adopt(conn: AsyncConnection[Any]) -> int:
                    cur = await conn.execute(
                        f"SELECT lease_owner, epoch, (SELECT coalesce(max(seq) + 1, 0) "
                        f"FROM {q}.entries WHERE job_id = %s) FROM {q}.jobs "
                        "WHERE id = %s",
                        (job_id, job_id),
                        prepare=True,
                    )
                    row = await cur.fetchone()
                    if row is None or row[0] != owner or row[1] != held:
                        raise LeaseLostError(
                            job=job_id, detail="the lease this worker claimed is gone"
                        )
                    return int(row[2])

                self._next_seq = await engine.call(adopt)
                self._epoch = held
                return

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
                            f"SELECT lease_owner FROM {q}.jobs WHERE id = %s",
                            (job_id,),
                        )
                        holder = await cur.fetchone()
                        raise LogLockedError(
                            job=job_id, holder=holder[0] if holder else None
                        )
                    return int(row[0]), await _next_seq(conn, q, job_id)

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
        owner, q = store.owner, store._q
        wrote = self._next_seq > 0

        async def run(conn: AsyncConnection[Any]) -> None:
            unlease = (
                f"UPDATE {q}.jobs SET lease_owner = NULL, lease_expires = NULL, "
                "updated = now(), status = CASE status WHEN 'running' THEN "
                "'pending' ELSE status END "
                "WHERE id = %s AND lease_owner = %s AND epoch = %s"
            )
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
        start = self._next_seq
        req = AppendRequest(
            call=host_caller("PostgreSQL store"),
            event=anyio.Event(),
            job=job_id,
            epoch=epoch,
            seq=start,
            entries=[e.decode() for e in entries],
        )
        if start == 0 and is_entry_type(entries[0], "job"):
            first = parse_job_entry(entries[0], job_id)
            assert first is not None
            req.function = first.fn
            req.args = orjson.dumps(first.args).decode()
        if is_entry_type(entries[-1], "end"):
            status, result, error = end_outcome(
                entries[-1], job_id, start + len(entries) - 1
            )
            req.status = status
            req.outcome_result = (
                orjson.dumps(result).decode() if status == "completed" else None
            )
            req.outcome_error = (
                orjson.dumps(error.to_json()).decode() if error else None
            )
            req.signal = DONE
        await self.store._engine.append(req)
        self._next_seq = start + len(entries)

    def __repr__(self) -> str:
        state = "held" if self._epoch is not None else "released"
        return f"<PostgresLog {self.job_id} in {self.store.label} {state}>"


async def _next_seq(conn: AsyncConnection[Any], q: str, job_id: str) -> int:
    cur = await conn.execute(
        f"SELECT coalesce(max(seq) + 1, 0) FROM {q}.entries WHERE job_id = %s",
        (job_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
