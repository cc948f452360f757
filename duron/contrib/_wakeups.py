"""How a SQL store's own thread answers the async tasks that wait on it.

Both SQL stores run their database work on a thread of their own (SQLite: one
connection; PostgreSQL: an asyncio loop with a connection pool), while the tasks
that ask for it run on any host loop: asyncio or trio, one loop or several. A
request carries the way back to its caller's loop (:func:`host_caller`); when the
thread is done with a batch of requests it sets their events, once per loop per
batch, and fires the watchers that wait for what those requests signal (a job
became runnable, a job ended, input was stored for a job).

Input is rung, not signalled: a job's inbox feed takes a mark
(:meth:`Watchers.inbox_mark`), reads the inbox, then waits for a ring after its
mark (:meth:`Watchers.wait_inbox`), so that input stored between the read and the
wait is not missed. A ring names jobs, or none for "any job" (another process
wrote to the database: the feeds look again).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

__all__ = [
    "DONE",
    "INBOX",
    "WORK",
    "Request",
    "Waiter",
    "Watchers",
    "host_caller",
    "host_waiter",
]

WORK = 1  # a job may have become runnable (or was asked to cancel)
DONE = 2  # a job ended
INBOX = 4  # input was stored for a job

_RING_MEMORY = 4096  # rings remembered by job; older marks see every ring


def host_caller(store: str) -> Callable[..., object]:
    """How the store's thread schedules a call on the event loop running this task
    (``store`` names the store kind in the error for a caller with no loop)."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token().run_sync_soon  # type: ignore[no-any-return]
        except RuntimeError:
            pass
    raise RuntimeError(f"the {store} is used from async code only")  # pragma: no cover


class Waiter(Protocol):
    """What a request's caller waits on: :class:`anyio.Event` or :class:`_Future`."""

    def set(self) -> None: ...

    async def wait(self) -> None: ...


class _Future:
    """A waiter on an asyncio loop: one bare future, woken by one callback.

    ``anyio.Event`` on asyncio adds an ``asyncio.Event``, its waiter queue and a
    second future on top; on a store's per-step round trip that costs ~10 µs.
    A task cancelled while waiting cancels the future, so :meth:`set` skips it.
    """

    __slots__ = ("_fut",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._fut: asyncio.Future[None] = loop.create_future()

    def set(self) -> None:
        if not self._fut.done():
            self._fut.set_result(None)

    async def wait(self) -> None:
        await self._fut


def host_waiter(store: str) -> tuple[Callable[..., object], Waiter]:
    """:func:`host_caller` and a fresh waiter for this task's loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return host_caller(store), anyio.Event()
    return loop.call_soon_threadsafe, _Future(loop)


@dataclass(slots=True, eq=False)
class Request:
    """One caller's request: the way back to its loop, and the answer."""

    call: Callable[..., object]
    event: Waiter
    signal: int = 0  # WORK | DONE: what a success tells the watchers
    job: str | None = None  # the job a DONE signal is about
    result: Any = None
    error: BaseException | None = None

    async def answer(self) -> Any:
        """Wait for the store's thread to answer; the result, or raise the error."""
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(slots=True, eq=False)
class _Watcher:
    mask: int
    job: str | None
    call: Callable[..., object]
    event: anyio.Event


def _set_all(events: list[Waiter]) -> None:
    for ev in events:
        ev.set()


class Watchers:
    """Tasks waiting for a signal, and the waking of answered requests."""

    def __init__(
        self, store: str, on_inbox_wait: Callable[[], None] | None = None
    ) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._watchers: list[_Watcher] = []
        self._on_inbox_wait = on_inbox_wait
        self._ring = 0  # rings so far
        self._ring_any = 0  # the last ring for any job
        self._rung: dict[str, int] = {}  # job -> its last ring
        self._inbox: list[_Watcher] = []

    # -- inbox rings -------------------------------------------------------------

    def inbox_mark(self) -> int:
        """The rings so far: :meth:`wait_inbox` returns at once after a newer one."""
        return self._ring

    @property
    def inbox_waiting(self) -> bool:
        """Whether a task waits for input (the store then watches other writers)."""
        return bool(self._inbox)

    def inbox_jobs(self) -> list[str]:
        """The jobs whose feeds wait for input now."""
        with self._lock:
            return sorted({w.job for w in self._inbox if w.job is not None})

    async def wait_inbox(self, job: str, mark: int, timeout: float) -> None:
        """Return once input for ``job`` (or any job) was rung after ``mark``, or
        after ``timeout`` seconds."""
        w = _Watcher(INBOX, job, host_caller(self._store), anyio.Event())
        with self._lock:
            if self._ring_any > mark or self._rung.get(job, 0) > mark:
                return
            if mark < self._ring - _RING_MEMORY:
                return  # the rings it may have missed are forgotten
            self._inbox.append(w)
        if self._on_inbox_wait is not None:
            self._on_inbox_wait()
        try:
            with anyio.move_on_after(timeout):
                await w.event.wait()
        finally:
            with self._lock:
                if w in self._inbox:
                    self._inbox.remove(w)

    def ring(self, jobs: Iterable[str] | None) -> None:
        """Input was stored for ``jobs`` (``None``: maybe for any job); wake their
        feeds (any thread)."""
        with self._lock:
            self._ring += 1
            n = self._ring
            if jobs is None:
                self._ring_any = n
                fire = self._inbox
                self._inbox = []
            else:
                wanted = set(jobs)
                for job in wanted:
                    self._rung[job] = n
                if len(self._rung) > _RING_MEMORY:
                    old = n - _RING_MEMORY
                    self._rung = {j: r for j, r in self._rung.items() if r > old}
                fire = [w for w in self._inbox if w.job in wanted]
                for w in fire:
                    self._inbox.remove(w)
        by_loop: dict[Callable[..., object], list[Waiter]] = {}
        for w in fire:
            by_loop.setdefault(w.call, []).append(w.event)
        for call, events in by_loop.items():
            with contextlib.suppress(RuntimeError):
                call(_set_all, events)

    async def wait(self, mask: int, timeout: float, job: str | None = None) -> None:
        """Return when an answered request carries ``mask`` (for ``job``), or after
        ``timeout`` seconds."""
        w = _Watcher(mask, job, host_caller(self._store), anyio.Event())
        with self._lock:
            self._watchers.append(w)
        try:
            with anyio.move_on_after(timeout):
                await w.event.wait()
        finally:
            with self._lock:
                if w in self._watchers:
                    self._watchers.remove(w)

    def wake(self, batch: Iterable[Request]) -> None:
        """Wake the callers of ``batch`` and the watchers its successes signal
        (called on the store's thread)."""
        by_loop: dict[Callable[..., object], list[Waiter]] = {}
        signals = 0
        done_jobs: set[str] = set()
        inbox_jobs: list[str] = []
        for req in batch:
            by_loop.setdefault(req.call, []).append(req.event)
            if req.error is None and req.signal:
                signals |= req.signal
                if req.signal & DONE and req.job is not None:
                    done_jobs.add(req.job)
                if req.signal & INBOX and req.job is not None:
                    inbox_jobs.append(req.job)
        if inbox_jobs:
            self.ring(inbox_jobs)
        if signals:
            with self._lock:
                fire = [
                    w
                    for w in self._watchers
                    if w.mask & signals & WORK
                    or (
                        w.mask & signals & DONE
                        and (w.job is None or w.job in done_jobs)
                    )
                ]
                for w in fire:
                    self._watchers.remove(w)
            for w in fire:
                by_loop.setdefault(w.call, []).append(w.event)
        for call, events in by_loop.items():
            # RuntimeError: that event loop is gone, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                call(_set_all, events)
