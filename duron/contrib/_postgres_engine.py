"""The PostgreSQL store's engine: psycopg's async pool on a thread of its own.

psycopg 3's async connections run on asyncio only, and a pool belongs to the event
loop that opened it. The engine therefore owns a private asyncio loop in a daemon
thread, with the connection pool on it. Async code on any host loop (asyncio or trio,
one loop or several) hands it requests and is woken through its own loop's
thread-safe ``call_soon`` (asyncio) or ``run_sync_soon`` (trio).

On that loop:

* every request runs as a task on a pooled connection, so reads, claims and polls
  of many jobs proceed side by side;
* appends are not run one by one: they queue, and one flusher writes every append
  queued meanwhile in ONE statement (group commit: one round trip and one commit
  for a scheduler step of many jobs). Each job's lease epoch is checked in that
  statement, under a row lock, so a stale writer's entries are refused while the
  others' commit;
* the leases this store object holds are renewed every third of their length,
  with the database's clock, not the workers'.

When the server goes away (a restart, a failover), requests wait for it up to
``connect_timeout`` while the pool (:mod:`~duron.contrib._postgres_pool`)
reconnects; psycopg's errors are translated once, here, into
:class:`~duron.StoreUnavailableError` (try again) or :class:`~duron.StorageError`
(refused). The operations that can safely run twice are retried once on a fresh
connection when theirs broke under them: reads, heartbeats, submits, releases,
recording a failure, and appends (a retried append skips the entries its first try
may have committed: no other writer can hold those positions under its epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from duron._errors import (
    DuronError,
    LeaseLostError,
    StorageError,
    StoreUnavailableError,
)
from duron._outage import Outage
from duron.contrib._lease_times import LeaseTimes
from duron.contrib._postgres_inbox import InputListener
from duron.contrib._postgres_pool import NoConnection, Pool, is_passing
from duron.contrib._postgres_schema import Schema, check_schema, missing_schema
from duron.contrib._sqllog import lost_detail
from duron.contrib._wakeups import Request, Watchers, host_caller

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["AppendRequest", "Engine", "read_lost_detail"]

_R = TypeVar("_R")
_log = logging.getLogger("duron")
_STORE = "PostgreSQL store"

# -- requests -----------------------------------------------------------------------------


def new_request(signal: int = 0, job: str | None = None) -> Request:
    """A request from the task running now."""
    return Request(host_caller(_STORE), anyio.Event(), signal, job)


_Fn = Callable[["AsyncConnection[Any]"], Awaitable[Any]]


@dataclass(slots=True, eq=False)
class AppendRequest(Request):
    """One job's batch of entries, with what its first or last entry sets on the job."""

    epoch: int = 0
    seq: int = 0
    entries: Sequence[str] = ()
    function: str | None = None  # the job entry's function and arguments
    args: str | None = None
    status: str | None = None  # the end entry's outcome
    outcome_result: str | None = None
    outcome_error: str | None = None


@dataclass(slots=True, eq=False)
class Stats:
    """What the engine did: the flusher's statements and how many appends each held."""

    flushes: int = 0
    appends: int = 0
    largest_batch: int = 0


# -- the engine ---------------------------------------------------------------------------


@dataclass(eq=False)
class Engine:
    """The pool, its thread and loop, the flusher and the lease renewer of one store."""

    dsn: str = field(repr=False)  # it may hold the password: shown by ``label``
    label: str
    schema: Schema
    owner: str
    lease_seconds: float
    pool_size: int
    connect_timeout: float
    outage: Outage
    held: dict[str, int] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._watchers = Watchers(_STORE, self._want_listener)
        self.leases = LeaseTimes(self.lease_seconds)
        # Engine-loop state (touched on the engine's thread only).
        self._listening = False
        self._pool: Pool | None = None
        self._schema_checked = False
        self._appends: list[AppendRequest] = []
        self._append_ready: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # the flusher, the renewer
        self._requests: set[asyncio.Task[Any]] = set()
        self._flushing = False
        self._closing: asyncio.Task[None] | None = None

    # -- host side --------------------------------------------------------------------

    async def call(
        self,
        fn: Callable[[AsyncConnection[Any]], Awaitable[_R]],
        *,
        op: str,
        signal: int = 0,
        job: str | None = None,
        retry: bool = False,
    ) -> _R:
        """Run ``fn(conn)`` on a pooled connection (autocommit; open a transaction
        with ``conn.transaction()``) and return its result.

        The request is handed over before the first await: a caller cancelled while
        waiting does not withdraw it, like a write already sent to the server.

        Args:
            fn: The statements.
            op: The operation, as errors name it (``"claim"``, ``"read"``...).
            signal: What a success tells the watchers (``WORK``, ``DONE``).
            job: The job the operation is for.
            retry: ``fn`` may run twice (it is idempotent): when the connection
                breaks under it, run it once more on a fresh one.
        """
        req = new_request(signal, job)
        loop = self._start(op, job)
        loop.call_soon_threadsafe(self._spawn, req, fn, op, retry)
        result: _R = await req.answer()
        return result

    async def direct(
        self, fn: Callable[[AsyncConnection[Any]], Awaitable[_R]], *, op: str
    ) -> _R:
        """Run ``fn(conn)`` on a connection of its own, outside the pool (which
        checks the schema): what ``migrate()`` uses."""
        req = new_request()
        loop = self._start(op)
        loop.call_soon_threadsafe(self._spawn_direct, req, fn, op)
        result: _R = await req.answer()
        return result

    async def append(self, req: AppendRequest) -> None:
        """Queue ``req`` for the next group commit and wait for it.

        Raises:
            LeaseLostError: The job's epoch is no longer ``req.epoch``.
        """
        loop = self._start("append", req.job)
        loop.call_soon_threadsafe(self._queue_append, req)
        await req.answer()

    async def wait_signal(
        self, mask: int, timeout: float, job: str | None = None
    ) -> None:
        """Return when a request of this store carrying ``mask`` (for ``job``) is
        done, or after ``timeout`` seconds."""
        await self._watchers.wait(mask, timeout, job)

    @property
    def watchers(self) -> Watchers:
        """The tasks waiting on this store (inbox feeds ring and wait here)."""
        return self._watchers

    def _want_listener(self) -> None:
        """A feed waits for input: listen for it from now on (once)."""
        loop = self._loop
        if loop is not None and not self._listening:
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(self._listen)

    def _listen(self) -> None:
        if self._listening or self._closing is not None:
            return
        self._listening = True
        listener = InputListener(
            lambda: self._connect(self.connect_timeout),
            self._watchers,
            self.schema.name,
        )
        self._keep(
            asyncio.get_running_loop().create_task(
                listener.run(), name="duron postgres input listener"
            )
        )

    def _start(self, op: str, job: str | None = None) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise StorageError(
                    kind=_STORE,
                    store=self.label,
                    operation=op,
                    detail="the store is closed",
                    job=job,
                )
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._serve,
                    args=(loop, ready),
                    name=f"duron postgres {self.label}",
                    daemon=True,
                )
                thread.start()
                ready.wait()
                self._loop = loop
                self._thread = thread
            return self._loop

    def stop(self) -> threading.Thread | None:
        """Close the pool and end the thread once running work is done; later
        calls fail."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None:
            return None
        with contextlib.suppress(RuntimeError):  # the loop is already gone
            loop.call_soon_threadsafe(self._begin_shutdown)
        return thread

    async def close(self) -> None:
        thread = self.stop()
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join)

    # -- the engine's thread ----------------------------------------------------------

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._append_ready = asyncio.Event()
        self._pool = Pool(
            self._open_connection, size=self.pool_size, timeout=self.connect_timeout
        )
        self._keep(loop.create_task(self._flusher(), name="duron postgres flusher"))
        self._keep(loop.create_task(self._renewer(), name="duron postgres leases"))
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _keep(self, task: asyncio.Task[Any], *, request: bool = False) -> None:
        tasks = self._requests if request else self._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _begin_shutdown(self) -> None:
        self._closing = asyncio.get_running_loop().create_task(self._shutdown())

    async def _shutdown(self) -> None:
        # Requests already handed over (appends included) finish first.
        while self._requests or self._appends or self._flushing:
            await asyncio.sleep(0.005)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()
        asyncio.get_running_loop().stop()

    def _spawn(self, req: Request, fn: _Fn, op: str, retry: bool) -> None:
        self._keep(
            asyncio.get_running_loop().create_task(self._run(req, fn, op, retry)),
            request=True,
        )

    def _spawn_direct(self, req: Request, fn: _Fn, op: str) -> None:
        self._keep(
            asyncio.get_running_loop().create_task(self._run_direct(req, fn, op)),
            request=True,
        )

    async def _run(self, req: Request, fn: _Fn, op: str, retry: bool) -> None:
        pool = self._pool
        assert pool is not None
        for attempt in range(2 if retry else 1):
            conn: AsyncConnection[Any] | None = None
            try:
                async with pool.connection() as conn:
                    req.result = await fn(conn)
            except BaseException as exc:
                req.error = self._translate(exc, op, req.job)
                if _broke_under(conn, req.error):
                    await pool.drop_idle()
                    if attempt == 0 and retry:
                        continue  # once more, on a fresh connection
                self._report(req.error)
            else:
                req.error = None
                self._report(None)
            break
        self._wake([req])

    async def _run_direct(self, req: Request, fn: _Fn, op: str) -> None:
        try:
            conn = await self._connect(self.connect_timeout)
            try:
                req.result = await fn(conn)
            finally:
                await conn.close()
        except BaseException as exc:
            req.error = self._translate(exc, op, req.job)
        self._wake([req])

    def _translate(
        self, exc: BaseException, op: str, job: str | None = None
    ) -> BaseException:
        """psycopg's (or the pool's) error as Duron's: the one place they are
        translated and classified. Anything else is returned as it is."""
        if isinstance(exc, (DuronError, asyncio.CancelledError)):
            return exc
        import psycopg

        error: BaseException
        if isinstance(exc, psycopg.errors.UndefinedTable):
            error = missing_schema(self.label, self.schema)
        elif isinstance(exc, NoConnection):
            error = StoreUnavailableError(
                kind=_STORE, store=self.label, operation=op, detail=exc.detail, job=job
            )
        elif isinstance(exc, psycopg.Error):
            cls = StoreUnavailableError if is_passing(exc) else StorageError
            error = cls(
                kind=_STORE,
                store=self.label,
                operation=op,
                detail=_one_line(exc),
                job=job,
            )
        else:
            return exc
        error.__cause__ = exc
        return error

    def _report(self, error: BaseException | None) -> None:
        """Tell the store's outage how a request went."""
        if error is None:
            self.outage.recovered()
        elif isinstance(error, StoreUnavailableError):
            self.outage.failed(error)

    async def _connect(self, timeout: float) -> AsyncConnection[Any]:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=_whole(timeout)
        )

    async def _open_connection(self, timeout: float) -> AsyncConnection[Any]:
        """A new connection for the pool; the first one checks the schema."""
        try:
            conn = await self._connect(timeout)
        except Exception as exc:
            if is_passing(exc):
                error = self._translate(exc, "connect")
                assert isinstance(error, StoreUnavailableError)
                self.outage.failed(error)
            raise
        if not self._schema_checked:
            try:
                await check_schema(conn, self.label, self.schema)
            except BaseException:
                await conn.close()
                raise
            self._schema_checked = True
        self.outage.recovered()
        return conn

    # -- group commit -----------------------------------------------------------------

    def _queue_append(self, req: AppendRequest) -> None:
        self._appends.append(req)
        assert self._append_ready is not None
        self._append_ready.set()

    async def _flusher(self) -> None:
        ready = self._append_ready
        assert ready is not None
        while True:
            await ready.wait()
            ready.clear()
            # One append per job per statement; a job's next batch (it cannot
            # have one yet: a job waits for its append) goes in the next.
            batch: list[AppendRequest] = []
            later: list[AppendRequest] = []
            seen: set[str] = set()
            for req in self._appends:
                (later if req.job in seen else batch).append(req)
                seen.add(req.job or "")
            self._appends = later
            if later:
                ready.set()
            if not batch:
                continue
            self._flushing = True
            try:
                await self._flush(batch)
            except BaseException as exc:
                first = None
                for req in batch:
                    if req.error is None and req.result is None:
                        req.error = self._translate(exc, "append", req.job)
                        first = first or req.error
                self._report(first)
                self._wake(batch)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            finally:
                self._flushing = False
            self._wake(batch)

    async def _flush(self, batch: list[AppendRequest]) -> None:
        pool = self._pool
        assert pool is not None
        conn: AsyncConnection[Any] | None = None
        try:
            async with pool.connection() as conn:
                await self._flush_on(conn, batch, again=False)
        except Exception as exc:
            if not _broke_under(conn, self._translate(exc, "append")):
                raise
            # The connection broke: whether the statement committed is unknown.
            # Once more on a fresh connection, skipping what the first try wrote.
            await pool.drop_idle()
            rest = [req for req in batch if req.error is None]
            async with pool.connection() as conn:
                await self._flush_on(conn, rest, again=True)
        self._report(None)

    async def _flush_on(
        self, conn: AsyncConnection[Any], batch: list[AppendRequest], *, again: bool
    ) -> None:
        s, owner = self.schema, self.owner
        try:
            accepted = await _write(conn, s, owner, batch, again=again)
        except Exception:
            if len(batch) == 1 or conn.closed:
                raise
            # One bad append must not fail the others: write each alone.
            accepted = set()
            for req in batch:
                try:
                    accepted |= await _write(conn, s, owner, [req], again=again)
                except Exception as exc:
                    if conn.closed:
                        raise
                    req.error = self._translate(exc, "append", req.job)
        self.stats.flushes += 1
        self.stats.appends += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for req in batch:
            if req.error is None and req.job not in accepted:
                assert req.job is not None
                req.error = LeaseLostError(
                    job=req.job,
                    detail=await read_lost_detail(
                        conn, self.schema, req.job, req.epoch
                    ),
                )
            elif req.error is None:
                req.result = True

    # -- leases -----------------------------------------------------------------------

    async def _renewer(self) -> None:
        every = self.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            held = dict(self.held)
            pool = self._pool
            if not held or pool is None:
                continue
            conn: AsyncConnection[Any] | None = None
            try:
                async with pool.connection() as conn:
                    since = time.monotonic()
                    cur = await conn.execute(
                        f"UPDATE {self.schema.q}.jobs AS j "
                        "SET lease_expires = now() + make_interval(secs => %s) "
                        "FROM unnest(%s::text[], %s::bigint[]) AS h(id, epoch) "
                        "WHERE j.id = h.id AND j.epoch = h.epoch "
                        "AND j.lease_owner = %s RETURNING j.id",
                        (
                            self.lease_seconds,
                            list(held),
                            list(held.values()),
                            self.owner,
                        ),
                    )
                    still = [row[0] for row in await cur.fetchall()]
                self.leases.renewed(since, still)
                self.leases.keep_only(self.held)
            except Exception as exc:
                # The next round tries again; a lease that runs out meanwhile is
                # taken over, and this store's writes to it are refused.
                error = self._translate(exc, "renew leases")
                if _broke_under(conn, error):
                    await pool.drop_idle()
                if isinstance(error, StoreUnavailableError):
                    self.outage.failed(error)  # logged once per outage
                else:
                    _log.warning("duron: %s", error)
            else:
                self.outage.recovered()

    # -- waking the host loops --------------------------------------------------------

    def _wake(self, batch: Sequence[Request]) -> None:
        self._watchers.wake(batch)


# -- statements ---------------------------------------------------------------------------


async def _write(
    conn: AsyncConnection[Any],
    schema: Schema,
    owner: str,
    batch: list[AppendRequest],
    *,
    again: bool = False,
) -> set[str]:
    """Append every request of ``batch`` whose epoch still holds, in one statement;
    the ids of the jobs whose entries were written.

    The ``FOR SHARE`` lock makes the epoch check hold until the commit: a claim that
    bumps the epoch waits for this statement, or this statement waits for the claim
    and then sees the new epoch (PostgreSQL re-checks a locked row's conditions on
    its newest version), so a stale writer's entries never land after a takeover.

    ``again``: a retry of a statement whose connection broke before its answer:
    entries already at their positions are skipped. Only that statement can have
    put them there: a writer's positions start after every entry of an older
    epoch, and a newer epoch fails the check.
    """
    s = schema.q
    e_job: list[str] = []
    e_seq: list[int] = []
    e_epoch: list[int] = []
    e_entry: list[str] = []
    for req in batch:
        assert req.job is not None
        n = len(req.entries)
        e_job += [req.job] * n
        e_seq += range(req.seq, req.seq + n)
        e_epoch += [req.epoch] * n
        e_entry += req.entries
    updates = [r for r in batch if r.function is not None or r.status is not None]
    sql = (
        f"WITH ok AS MATERIALIZED ("
        f" SELECT j.id FROM {s}.jobs AS j"
        " JOIN unnest(%(w_id)s::text[], %(w_epoch)s::bigint[]) AS w(id, epoch)"
        " ON j.id = w.id AND j.epoch = w.epoch"
        " WHERE j.lease_owner = %(owner)s FOR SHARE OF j"
        f"), ins AS (INSERT INTO {s}.entries (job_id, seq, epoch, entry)"
        " SELECT e.job_id, e.seq, e.epoch, e.entry FROM unnest(%(e_job)s::text[],"
        " %(e_seq)s::bigint[], %(e_epoch)s::bigint[], %(e_entry)s::text[])"
        " AS e(job_id, seq, epoch, entry) WHERE e.job_id IN (SELECT id FROM ok)"
        + (" ON CONFLICT (job_id, seq) DO NOTHING)" if again else ")")
    )
    params: dict[str, Any] = {
        "owner": owner,
        "w_id": [r.job for r in batch],
        "w_epoch": [r.epoch for r in batch],
        "e_job": e_job,
        "e_seq": e_seq,
        "e_epoch": e_epoch,
        "e_entry": e_entry,
    }
    if updates:
        sql += (
            f", upd AS (UPDATE {s}.jobs AS j SET"
            " function = coalesce(u.function, j.function),"
            " args = coalesce(u.args, j.args),"
            " status = coalesce(u.status, j.status),"
            " result = CASE WHEN u.status IS NULL THEN j.result ELSE u.result END,"
            " error = CASE WHEN u.status IS NULL THEN j.error ELSE u.error END,"
            " cancel_requested = u.status IS NULL AND j.cancel_requested,"
            " updated = CASE WHEN u.status IS NULL THEN j.updated ELSE now() END"
            " FROM unnest(%(u_id)s::text[], %(u_function)s::text[],"
            " %(u_args)s::text[], %(u_status)s::text[], %(u_result)s::text[],"
            " %(u_error)s::text[]) AS u(id, function, args, status, result, error)"
            " WHERE j.id = u.id AND j.id IN (SELECT id FROM ok))"
        )
        params.update(
            u_id=[r.job for r in updates],
            u_function=[r.function for r in updates],
            u_args=[r.args for r in updates],
            u_status=[r.status for r in updates],
            u_result=[r.outcome_result for r in updates],
            u_error=[r.outcome_error for r in updates],
        )
    sql += " SELECT id FROM ok"
    cur = await conn.execute(sql, params, prepare=True)
    return {row[0] for row in await cur.fetchall()}


async def read_lost_detail(
    conn: AsyncConnection[Any], schema: Schema, job_id: str, epoch: int
) -> str:
    """Why the writer of ``epoch`` no longer holds ``job_id`` (see
    :func:`~duron.contrib._sqllog.lost_detail`)."""
    cur = await conn.execute(
        f"SELECT lease_owner, epoch, status FROM {schema.q}.jobs WHERE id = %s",
        (job_id,),
    )
    return lost_detail(await cur.fetchone(), epoch)


def _broke_under(conn: AsyncConnection[Any] | None, error: BaseException) -> bool:
    """Whether a request failed because its connection broke while it ran (not
    because no connection could be had): another connection may do better."""
    return conn is not None and conn.closed and isinstance(error, StoreUnavailableError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _whole(seconds: float) -> int:
    # libpq takes whole seconds; 0 would mean "wait forever".
    return max(1, round(seconds))
