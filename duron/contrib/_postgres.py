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

import re
from typing import TYPE_CHECKING, Any

import orjson

from duron._errors import JobNotFoundError
from duron._jobstore import (
    TERMINAL,
    check_job_id,
    check_requeue,
    is_entry_type,
)
from duron._limits import DEFAULT_LIMITS, LogLimits, checked_limits
from duron._outage import Outage
from duron._redact import redact
from duron.contrib._job_search import PostgresDialect
from duron.contrib._postgres_engine import Engine
from duron.contrib._postgres_inbox import PostgresInbox
from duron.contrib._postgres_log import PostgresLog
from duron.contrib._postgres_schema import SCHEMA_VERSION, Schema, channel, migrate
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
from duron.contrib._wakeups import DONE, WORK

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from duron._log import JobStarted

__all__ = ["PostgresStore", "store_from_url"]

_Row = tuple[Any, ...]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_INSTALL = "PostgreSQL storage needs psycopg 3: pip install 'duron[postgres]'"


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc


def _label(dsn: str, schema: str) -> str:
    """The DSN as a URL without its password (what messages and the CLI show).

    Built from the parsed DSN, so it names the server whatever form the DSN has
    (URL or ``key=value``) and never holds a password; a DSN that does not parse
    is shown through :func:`~duron._redact.redact`.
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception as exc:
        # libpq quotes the piece it stopped at, which may be the password: the
        # message is shown hidden, and the driver's exception is not chained.
        detail = " ".join(redact(str(exc), dsn=dsn).split())
        raise ValueError(
            f"{redact(dsn, dsn=dsn)!r} is not a PostgreSQL connection string "
            f"({detail}); "
            "write postgresql://user:password@host:5432/dbname"
        ) from None
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


class PostgresStore(PostgresInbox, SQLStore):
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
        job_id = await store.submit(checkout.options(job_id="order-42"), order)
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
        limits: How large a job's log entries may be, and when to warn about a
            job's log size (:class:`~duron.LogLimits`; default: 4 MiB per entry).

    Raises:
        ImportError: psycopg is not installed (``pip install 'duron[postgres]'``).
        ValueError: ``dsn`` is not a connection string, ``schema`` not an
            identifier, or ``lease`` / ``pool_size`` out of range.
        SchemaError: (on first use) The schema is missing or from a newer Duron.
    """

    _engine: Engine

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "duron",
        lease: float = DEFAULT_LEASE,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        limits: LogLimits = DEFAULT_LIMITS,
    ) -> None:
        _require_driver()
        if not _IDENTIFIER.fullmatch(str(schema)):
            raise ValueError(
                f"schema must be a plain PostgreSQL identifier (letters, digits and "
                f"_, not starting with a digit, at most 63 characters), not {schema!r}"
            )
        self.lease: float = check_lease(lease)
        self.limits: LogLimits = checked_limits(limits)
        if pool_size < 2:
            raise ValueError(
                f"pool_size must be at least 2 (appends and the other requests "
                f"run side by side), not {pool_size!r}"
            )
        self.dsn = dsn
        self.schema = schema
        self.label: str = _label(dsn, schema)
        self.owner: str = new_owner()
        self._schema = Schema(schema)
        self._start(
            Engine(
                dsn=dsn,
                label=self.label,
                schema=self._schema,
                owner=self.owner,
                lease_seconds=self.lease,
                pool_size=pool_size,
                connect_timeout=connect_timeout,
                outage=Outage(f"PostgreSQL store {self.label}"),
            )
        )
        self._dialect = PostgresDialect(self._schema.q)

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

        return await self._engine.direct(run, op="migrate")

    @property
    def _q(self) -> str:
        return self._schema.q

    def log(self, job_id: str) -> PostgresLog:
        """The log of one job, as a :class:`~duron.LogStorage`.

        ``checkout.invoke(store.log("order-42"))`` runs that job here and now (the
        job's row is created by ``acquire()`` if it does not exist).
        """
        access = LogAccess(self._engine, self._attached, self._read, self._q)
        return PostgresLog(self, check_job_id(job_id), access)

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

    # -- the statements ---------------------------------------------------------------

    async def _add(
        self,
        job_id: str,
        entry: JobStarted,
        raw: str,
        args: str,
        parent: tuple[str, str] | None = None,
    ) -> tuple[bool, str | None]:
        q = self._q
        parent_id, future = parent if parent is not None else (None, None)

        async def run(conn: AsyncConnection[Any]) -> tuple[bool, str | None]:
            cur = await conn.execute(
                f"WITH j AS (INSERT INTO {q}.jobs (id, function, args, status, "
                "parent_id, parent_future) "
                "VALUES (%s, %s, %s, 'pending', %s, %s) ON CONFLICT (id) DO NOTHING "
                f"RETURNING id) INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                "SELECT id, 0, 0, %s FROM j RETURNING job_id",
                (job_id, entry.fn, args, parent_id, future, raw),
                prepare=True,
            )
            if await cur.fetchone() is not None:
                return True, None
            cur = await conn.execute(
                f"SELECT entry FROM {q}.entries WHERE job_id = %s AND seq = 0",
                (job_id,),
            )
            first = await cur.fetchone()
            return False, first[0] if first else None

        return await self._engine.call(
            run, op="submit", signal=WORK, job=job_id, retry=True
        )

    async def _job_row(self, job_id: str) -> _Row | None:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> _Row | None:
            cur = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM {q}.jobs WHERE id = %s",
                (job_id,),
                prepare=True,
            )
            return await cur.fetchone()

        return await self._engine.call(run, op="get", job=job_id, retry=True)

    async def _query(self, sql: str, params: list[Any], op: str) -> list[_Row]:
        async def run(conn: AsyncConnection[Any]) -> list[_Row]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

        return await self._engine.call(run, op=op, retry=True)

    async def _cancel(self, job_id: str, children: bool) -> bool:
        q = self._q
        error = cancelled_before_start(job_id)

        async def run(conn: AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                if children:
                    # Rows locked as a child's end locks them (the child, then
                    # its parent, by the trigger): deepest first, the job last.
                    await conn.execute(
                        f"WITH RECURSIVE tree(id, depth) AS (SELECT id, 1 FROM "
                        f"{q}.jobs WHERE parent_id = %s UNION SELECT j.id, "
                        f"tree.depth + 1 FROM {q}.jobs AS j JOIN tree ON "
                        "j.parent_id = tree.id) "
                        f"SELECT j.id FROM {q}.jobs AS j JOIN tree USING (id) "
                        "ORDER BY tree.depth DESC, j.id FOR UPDATE OF j",
                        (job_id,),
                    )
                status, owner, live = await self._lease_state(conn, job_id)
                if status in TERMINAL:
                    return False
                if children:
                    cur = await conn.execute(
                        DESCENDANTS.format(t=f"{q}.jobs", m="%s")
                        + f"SELECT id FROM {q}.jobs WHERE id IN (SELECT id FROM tree) "
                        + f"AND status NOT IN {TERMINAL_SQL}",
                        (job_id,),
                    )
                    for (child,) in await cur.fetchall():
                        await self._request_cancel(conn, child)
                cur = await conn.execute(
                    f"SELECT 1 FROM {q}.entries WHERE job_id = %s AND seq > 0 LIMIT 1",
                    (job_id,),
                )
                if await cur.fetchone() is None and not (owner is not None and live):
                    await conn.execute(
                        f"UPDATE {q}.jobs SET status = 'cancelled', error = %s, "
                        "lease_owner = NULL, lease_expires = NULL, updated = now() "
                        "WHERE id = %s",
                        (error, job_id),
                    )
                else:
                    await self._request_cancel(conn, job_id)
                return True

        return await self._engine.call(run, op="cancel", signal=WORK | DONE, job=job_id)

    async def _request_cancel(self, conn: AsyncConnection[Any], job_id: str) -> None:
        """Mark the job asked to cancel, and put the request in its inbox: its
        run, on a worker or the seed way, records it once and delivers it."""
        q = self._q
        await conn.execute(
            f"WITH n AS (UPDATE {q}.jobs SET inbox_seq = inbox_seq + 1, "
            f"cancel_requested = true, updated = now(), {WAKE} WHERE id = %s "
            f"RETURNING inbox_seq) INSERT INTO {q}.inbox (job_id, seq, kind, "
            "target) SELECT %s, inbox_seq, 'cancel', '' FROM n",
            (job_id, job_id),
        )
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (channel(self._engine.schema.name), job_id)
        )

    async def _lease_state(
        self, conn: AsyncConnection[Any], job_id: str
    ) -> tuple[str, str | None, bool]:
        """The job's status, lease owner and whether that lease is live, with the
        row locked until the transaction ends."""
        cur = await conn.execute(
            "SELECT status, lease_owner, lease_expires >= now() "
            f"FROM {self._q}.jobs WHERE id = %s FOR UPDATE",
            (job_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        status, owner, live = row
        return status, owner, bool(live)

    async def _requeue(self, job_id: str) -> None:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction():
                status, owner, live = await self._lease_state(conn, job_id)
                cur = await conn.execute(
                    f"SELECT entry FROM {q}.entries WHERE job_id = %s "
                    "ORDER BY seq DESC LIMIT 1",
                    (job_id,),
                )
                last = await cur.fetchone()
                ended = last is not None and is_entry_type(last[0].encode(), "end")
                check_requeue(job_id, status, ended, owner, live)
                await conn.execute(
                    f"UPDATE {q}.jobs SET status = 'pending', error = NULL, "
                    "lease_owner = NULL, lease_expires = NULL, updated = now() "
                    "WHERE id = %s",
                    (job_id,),
                )

        await self._engine.call(run, op="requeue", signal=WORK, job=job_id, retry=True)

    async def _fork(self, job_id: str, new_id: str, at: int) -> None:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT 1 FROM {q}.jobs WHERE id = %s", (job_id,)
                )
                if await cur.fetchone() is None:
                    raise JobNotFoundError(job=job_id, store=self.label)
                cur = await conn.execute(
                    f"SELECT seq, entry FROM {q}.entries WHERE job_id = %s "
                    "AND seq >= 0 ORDER BY seq",
                    (job_id,),
                )
                rows = await cur.fetchall()
                first, prefix = fork_copy(
                    ((seq, text.encode()) for seq, text in rows), job_id, at
                )
                cur = await conn.execute(
                    f"INSERT INTO {q}.jobs (id, function, args, status, forked_from) "
                    "VALUES (%s, %s, %s, 'pending', %s) ON CONFLICT (id) DO NOTHING "
                    "RETURNING id",
                    (new_id, first.fn, orjson.dumps(first.args).decode(), job_id),
                )
                if await cur.fetchone() is None:
                    raise fork_taken(new_id, job_id, at)
                await conn.execute(
                    f"INSERT INTO {q}.entries (job_id, seq, epoch, entry) "
                    "SELECT %s, s.seq, 0, s.entry "
                    "FROM unnest(%s::bigint[], %s::text[]) AS s(seq, entry)",
                    (
                        new_id,
                        list(range(len(prefix))),
                        [raw.decode() for raw in prefix],
                    ),
                )

        await self._engine.call(run, op="fork", signal=WORK, job=job_id)

    async def _prune(self, wanted: list[str], age: float) -> int:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                f"WITH gone AS (DELETE FROM {q}.jobs WHERE status = ANY(%s) "
                "AND updated < now() - make_interval(secs => %s) RETURNING id), "
                f"e AS (DELETE FROM {q}.entries WHERE job_id IN "
                "(SELECT id FROM gone)), "
                f"i AS (DELETE FROM {q}.inbox WHERE job_id IN "
                "(SELECT id FROM gone)) SELECT count(*) FROM gone",
                (wanted, age),
            )
            row = await cur.fetchone()
            return 0 if row is None else int(row[0])

        return await self._engine.call(run, op="prune")

    async def _log_sizes(self, job_ids: list[str]) -> list[_Row]:
        sql = (
            "SELECT job_id, count(*), sum(octet_length(entry)) "
            f"FROM {self._q}.entries WHERE job_id = ANY(%s) AND seq >= 0 "
            "GROUP BY job_id"
        )

        async def run(conn: AsyncConnection[Any]) -> list[_Row]:
            cur = await conn.execute(sql, (job_ids,))
            return await cur.fetchall()

        return await self._engine.call(run, op="list", retry=True)

    async def _archive_tops(self, job_ids: list[str]) -> list[tuple[str, int]]:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[str, int]]:
            out = []
            for job_id in job_ids:  # each one a step down the primary key
                cur = await conn.execute(
                    f"SELECT max(seq) FROM {q}.entries WHERE job_id = %s AND seq < 0",
                    (job_id,),
                )
                row = await cur.fetchone()
                if row is not None and row[0] is not None:
                    out.append((job_id, int(row[0])))
            return out

        return await self._engine.call(run, op="read", retry=True)

    async def _read_span(
        self, job_id: str, start: int, stop: int, limit: int
    ) -> list[tuple[int, bytes]]:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[int, bytes]]:
            cur = await conn.execute(
                f"SELECT seq, entry FROM {q}.entries WHERE job_id = %s "
                "AND seq >= %s AND seq < %s ORDER BY seq LIMIT %s",
                (job_id, start, stop, limit),
            )
            return [(seq, text.encode()) for seq, text in await cur.fetchall()]

        return await self._engine.call(run, op="read", job=job_id, retry=True)

    async def _exists(self, job_id: str) -> bool:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> bool:
            cur = await conn.execute(f"SELECT 1 FROM {q}.jobs WHERE id = %s", (job_id,))
            return await cur.fetchone() is not None

        return await self._engine.call(run, op="read", job=job_id, retry=True)

    async def _read_chunk(
        self, job_id: str, start: int, limit: int
    ) -> list[tuple[int, bytes]]:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[int, bytes]]:
            cur = await conn.execute(
                f"SELECT seq, entry FROM {q}.entries WHERE job_id = %s "
                "AND seq >= %s ORDER BY seq LIMIT %s",
                (job_id, start, limit),
                prepare=True,
            )
            return [(seq, text.encode()) for seq, text in await cur.fetchall()]

        return await self._engine.call(run, op="read", job=job_id, retry=True)

    async def _claim_rows(
        self, limit: int, mine: list[str], functions: tuple[str, ...] | None
    ) -> list[tuple[str, str, int, Any, Any]]:
        # Rows another worker is claiming, or another writer is appending to, are
        # skipped, not waited for. A lease of this store object that it no longer
        # holds (its release failed while the server was away) is taken back.
        q = self._q
        owner, lease = self.owner, self.lease
        of_functions, params = "", [owner, mine]
        if functions is not None:  # its own statement: the index by function
            of_functions = "AND function = ANY(%s) "
            params.append(list(functions))

        async def run(
            conn: AsyncConnection[Any],
        ) -> list[tuple[str, str, int, Any, Any]]:
            cur = await conn.execute(
                f"WITH c AS (SELECT id FROM {q}.jobs "
                "WHERE (status IN ('pending', 'running') OR (status = 'suspended' "
                "AND wake_at <= now())) AND function IS NOT NULL "
                "AND (lease_expires IS NULL OR lease_expires < now() "
                "OR lease_owner = %s) AND NOT id = ANY(%s) "
                f"{of_functions}ORDER BY created, id LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"UPDATE {q}.jobs AS j SET status = 'running', lease_owner = %s, "
                "lease_expires = now() + make_interval(secs => %s), "
                "epoch = j.epoch + 1, updated = now(), wake_at = NULL "
                "FROM c WHERE j.id = c.id "
                "RETURNING j.id, j.function, j.epoch, j.cancel_requested, j.created",
                (*params, limit, owner, lease),
                prepare=True,
            )
            return await cur.fetchall()

        return await self._engine.call(run, op="claim")

    async def _lease_rows(self, ids: list[str]) -> dict[str, tuple[str, int, Any]]:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> list[tuple[str, str, int, bool]]:
            cur = await conn.execute(
                f"SELECT id, lease_owner, epoch, cancel_requested FROM {q}.jobs "
                "WHERE id = ANY(%s)",
                (ids,),
                prepare=True,
            )
            return await cur.fetchall()

        rows = await self._engine.call(run, op="heartbeat", retry=True)
        return {r[0]: r[1:] for r in rows}

    async def _fail(self, job_id: str, epoch: int, error: str) -> None:
        q = self._q

        async def run(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                f"UPDATE {q}.jobs SET status = 'failed', error = %s, "
                "lease_owner = NULL, lease_expires = NULL, cancel_requested = false, "
                "updated = now() "
                f"WHERE id = %s AND epoch = %s AND status NOT IN {TERMINAL_SQL}",
                (error, job_id, epoch),
            )

        await self._engine.call(run, op="fail", signal=DONE, job=job_id, retry=True)
