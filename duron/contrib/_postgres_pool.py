"""The PostgreSQL store's connections: a small pool that outlives the server's restarts.

The pool lives on the store engine's asyncio loop. It opens connections on demand,
up to its size, and hands back the most recently used idle one first. Before handing
out a connection it checks, without a round trip, that the server has not dropped
it: a server that shuts down or restarts sends a last message (``terminating
connection due to administrator command``) and closes the socket, so a connection
it killed has input waiting where a live idle one has none. Those are discarded,
as are connections idle for longer than :data:`MAX_IDLE`.

While the server cannot be reached, a request waits for it, up to the pool's
timeout, retrying the connection with backoff and jitter (:data:`FIRST_RETRY`
doubling up to :data:`RETRY_CAP`); a restart shorter than that is ridden out. A
pool that never reached its server reports the first failure at once.

:func:`is_passing` is where psycopg's errors are told apart: the server cannot be
reached right now (try again) or it refused (a bug, a missing table, bad data).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from duron._outage import backoff

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["FIRST_RETRY", "MAX_IDLE", "RETRY_CAP", "NoConnection", "Pool", "is_passing"]

FIRST_RETRY = 0.05
"""Seconds before the first new try to connect after a failed one."""
RETRY_CAP = 2.0
"""The longest wait between two tries to connect."""
MAX_IDLE = 300.0
"""Seconds a connection may sit idle before it is closed rather than reused (a
firewall may have dropped it silently meanwhile)."""

# SQLSTATE classes and codes that mean "the server cannot serve this right now"
# (PostgreSQL's errcodes appendix): connection exceptions (08...), insufficient
# resources (53...: too many connections, disk full, out of memory), the server
# shutting down or crashed (57P01 admin_shutdown, 57P02 crash_shutdown), still
# starting (57P03 cannot_connect_now), the session ended by a server timeout
# (57P05 idle_session_timeout), and a read-only transaction (25006): after a
# failover the old address may lead to a standby until DNS or the proxy follows.
_PASSING_CLASSES = frozenset({"08", "53"})
_PASSING_STATES = frozenset(
    {
        "57P01",
        "57P02",
        "57P03",
        "57P05",
        "25006",
        # Two transactions that wait for each other's rows: the server aborts
        # one; the same work succeeds when tried again.
        "40P01",  # deadlock_detected
    }
)


def is_passing(exc: BaseException) -> bool:
    """Whether a psycopg error means the server cannot be reached right now.

    Errors the server sent carry a SQLSTATE, judged by its class and code. Errors
    without one are psycopg's own: an ``OperationalError`` is a connection that
    could not be made or was lost (refused, reset, closed, timed out); anything
    else (a programming or data error) is a refusal.
    """
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is not None:
        return state[:2] in _PASSING_CLASSES or state in _PASSING_STATES
    return isinstance(exc, psycopg.OperationalError)


class NoConnection(Exception):
    """The pool could not give a connection in time (the engine translates it).

    Attributes:
        detail: Why, in a few words.
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def _has_input(fd: int) -> bool:
    """Whether the socket has something to read (or is closed): an idle
    connection that does was dropped by the server."""
    poll = getattr(select, "poll", None)
    if poll is None:  # pragma: no cover - Windows
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)
    p = poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def usable(conn: AsyncConnection[Any]) -> bool:
    """Whether an idle connection can be handed out: open, outside a transaction,
    and not dropped by the server since its last use."""
    from psycopg import pq

    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        return False
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    try:
        return not _has_input(pgconn.socket)
    except Exception:  # no socket any more
        return False


class Pool:
    """Connections to one server, on one asyncio loop (see the module docstring).

    Args:
        connect: Opens a connection, waiting at most the seconds it is given;
            raises psycopg's error (or the store's own) when it cannot.
        size: The most connections open at once.
        timeout: Seconds a request waits for a connection.
    """

    def __init__(
        self,
        connect: Callable[[float], Awaitable[AsyncConnection[Any]]],
        *,
        size: int,
        timeout: float,
    ) -> None:
        self._connect = connect
        self.size = size
        self.timeout = timeout
        self._idle: list[tuple[AsyncConnection[Any], float]] = []
        self._open = 0  # connections open or being opened
        self._changed = asyncio.Event()  # a connection came back, or a slot freed
        self._failures = 0  # failed tries to connect in a row
        self._retry_at = 0.0
        self._last: BaseException | None = None  # the last failure to connect
        self._reached = False
        self._closed = False
        self.opened = 0  # connections opened so far
        self.discarded = 0  # connections found dead (or too old) and closed

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection for the block, returned to the pool after it."""
        conn = await self.get()
        try:
            yield conn
        finally:
            await self.put(conn)

    async def get(self) -> AsyncConnection[Any]:
        """An idle connection that works, or a new one.

        Raises:
            NoConnection: None within the timeout (the server is unreachable or
                every connection is busy).
            Exception: The pool never reached the server: why not, at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        tried = False
        while True:
            now = loop.time()
            conn = await self._take_idle(now)
            if conn is not None:
                return conn
            # The backoff after an outage may run past this request's deadline:
            # every request still gets one try of its own (the server may be back).
            due = now >= self._retry_at or (not tried and self._retry_at >= deadline)
            if self._open < self.size and due:
                tried = True
                conn = await self._open_one(deadline - now)
                if conn is not None:
                    return conn
                continue
            if now >= deadline:
                raise self._timed_out()
            wake = deadline
            if self._open < self.size:
                wake = min(wake, self._retry_at)
            changed = self._changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), max(wake - now, 0.0))

    async def put(self, conn: AsyncConnection[Any]) -> None:
        """Take a connection back after use (a broken one is closed)."""
        if not self._closed and usable(conn):
            self._idle.append((conn, asyncio.get_running_loop().time()))
        else:
            await self._discard(conn)
        self._notify()

    async def drop_idle(self) -> None:
        """Close every idle connection: one just broke under a request, and its
        siblings were most likely dropped by the same server shutdown, even if
        the news has not reached their sockets yet."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self.discarded += 1
            await self._discard(conn)
        if idle:
            self._notify()

    async def close(self) -> None:
        """Close the idle connections (the others are closed when put back)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await self._discard(conn)

    async def _take_idle(self, now: float) -> AsyncConnection[Any] | None:
        while self._idle:
            conn, since = self._idle.pop()
            if now - since <= MAX_IDLE and usable(conn):
                return conn
            self.discarded += 1
            await self._discard(conn)
        return None

    async def _open_one(self, timeout: float) -> AsyncConnection[Any] | None:
        """A new connection; ``None`` if this try failed and another is due."""
        self._open += 1
        try:
            conn = await self._connect(max(timeout, 0.0))
        except Exception as exc:
            self._open -= 1
            self._notify()
            if not self._reached or not is_passing(exc):
                raise
            self._failures += 1
            self._last = exc
            loop = asyncio.get_running_loop()
            self._retry_at = loop.time() + backoff(
                self._failures, FIRST_RETRY, RETRY_CAP
            )
            return None
        except BaseException:
            self._open -= 1
            self._notify()
            raise
        self._reached = True
        self._failures = 0
        self._retry_at = 0.0
        self._last = None
        self.opened += 1
        return conn

    async def _discard(self, conn: AsyncConnection[Any]) -> None:
        self._open -= 1
        with contextlib.suppress(Exception):
            await conn.close()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _timed_out(self) -> NoConnection:
        if self._last is not None:
            last = " ".join(str(self._last).split())
            error = NoConnection(f"no connection within {self.timeout:g} s ({last})")
            error.__cause__ = self._last
            return error
        return NoConnection(
            f"no connection within {self.timeout:g} s: all {self.size} are busy"
        )
