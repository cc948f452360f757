"""The deterministic asyncio loop that durable code runs on.

It never waits and never polls: the job driver steps it. Ready callbacks run in FIFO
order until none is left (:meth:`DurableLoop.run_ready`); timers fire only when the
driver advances the virtual clock (:meth:`DurableLoop.advance`), one at a time, in
``(when, scheduling order)`` order, each followed by everything it made ready. Given
the same sequence of deliveries and clock advances, durable code therefore takes the
same path, issues the same operations in the same order and sees the same times.

Because it is a real ``asyncio.AbstractEventLoop``, durable code may use
``asyncio.gather``, ``create_task``, ``TaskGroup``, ``wait_for``, ``timeout``,
``sleep``, and anyio's task groups and ``sleep`` (anyio sees an asyncio loop).

Everything the loop would do with the outside world is refused with a
:class:`~duron.UsageError` that says to use an effect (see :data:`REFUSED_IO`):
sockets, name resolution, subprocesses, pipes, file-descriptor watchers, OS
signal handlers, executors and callbacks from other threads. None of it would be
recorded, and a replay would do it again.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import sys
import threading
from asyncio import events
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from duron._errors import UsageError

try:  # anyio finds its backend through sniffio when it is installed
    from sniffio import thread_local as _sniffio_local
except ImportError:  # pragma: no cover - sniffio is present wherever anyio is
    _sniffio_local = threading.local()  # type: ignore[assignment]

__all__ = ["REFUSED_IO", "DurableLoop", "in_durable_code"]

_T = TypeVar("_T")
_log = logging.getLogger("duron")


class _Handle(asyncio.Handle):
    """``asyncio.Handle`` without the debug-mode bookkeeping: replay makes one per step."""

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._source_traceback = None
        self._repr = None
        self._context = context if context is not None else contextvars.copy_context()


def in_durable_code() -> bool:
    """True when called from code running on a :class:`DurableLoop`."""
    return isinstance(events._get_running_loop(), DurableLoop)


class DurableLoop(asyncio.AbstractEventLoop):
    """An asyncio loop with a virtual clock, stepped by the job driver."""

    def __init__(self, clock: float) -> None:
        # Callbacks ready to run, in order (the driver asks whether any are).
        self.ready: deque[asyncio.Handle] = deque()
        # (due, scheduling order, handle, clock when it was set)
        self._timers: list[tuple[float, int, asyncio.TimerHandle, float]] = []
        self._seq = 0
        # Told about each timer that fires (seq, set at, due); the driver sets it
        # for the live part of an observed run.
        self.on_timer: Callable[[int, float, float], None] | None = None
        self._clock = clock
        self._closed = False
        self._exception_handler: Any = None
        self._task_factory: Any = None
        self.errors: list[dict[str, Any]] = []
        self._hooks = (self._asyncgen_firstiter, self._asyncgen_finalizer)

    # -- stepping (used by the driver) ------------------------------------------------

    def run_ready(self) -> None:
        """Run ready callbacks until none is left."""
        ready = self.ready
        if not ready:
            return
        prev_loop = events._get_running_loop()
        events._set_running_loop(self)
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(*self._hooks)
        # Under a trio host sniffio says "trio"; code in here runs on asyncio.
        prev_lib: str | None = getattr(_sniffio_local, "name", None)
        if prev_lib is not None:
            _sniffio_local.name = "asyncio"
        try:
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            if prev_lib is not None:
                _sniffio_local.name = prev_lib
            sys.set_asyncgen_hooks(*hooks)
            events._set_running_loop(prev_loop)

    def next_deadline(self) -> float | None:
        """When the earliest pending timer is due, or None."""
        timers = self._timers
        while timers and timers[0][2]._cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def due_by(self, t: float) -> bool:
        """Whether a pending timer falls due at or before ``t``."""
        deadline = self.next_deadline()
        return deadline is not None and deadline <= t

    def advance_quietly(self, to: float) -> bool:
        """Move the clock to ``to`` if no timer falls due by then (nothing runs);
        False, with nothing done, if one does: :meth:`advance` fires it, and the
        driver then answers what it leads to step by step."""
        if self.due_by(to):
            return False
        if to > self._clock:
            self._clock = to
        return True

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing every timer due by then, in order."""
        timers = self._timers
        while timers and timers[0][0] <= to:
            when, seq, handle, set_at = heapq.heappop(timers)
            if handle._cancelled:
                continue
            if when > self._clock:
                self._clock = when
            if self.on_timer is not None:
                self.on_timer(seq, set_at, when)
            self.ready.append(handle)
            self.run_ready()
        if to > self._clock:
            self._clock = to

    def spawn(
        self, coro: Coroutine[Any, Any, _T], context: contextvars.Context
    ) -> asyncio.Task[_T]:
        """Create the root task inside ``context`` (a copy is taken, as asyncio does)."""
        return context.run(self.create_task, coro)

    # -- the asyncio API durable code uses ------------------------------------------

    def time(self) -> float:
        return self._clock

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = _Handle(callback, args, self, context)
        self.ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self._clock + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._timers, (when, self._seq, handle, self._clock))
        self._seq += 1
        handle._scheduled = True  # type: ignore[attr-defined]
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass  # cancelled timers are dropped lazily when they reach the heap's top

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[_T]:
        if self._task_factory is not None:
            return self._task_factory(self, coro, **kwargs)  # type: ignore[no-any-return]
        if context is None:
            return asyncio.Task(coro, loop=self, name=name, **kwargs)
        return asyncio.Task(coro, loop=self, name=name, context=context, **kwargs)  # type: ignore[call-arg]

    def set_task_factory(self, factory: Any) -> None:
        self._task_factory = factory

    def get_task_factory(self) -> Any:
        return self._task_factory

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return not self._closed

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.ready.clear()
        self._timers.clear()

    def get_exception_handler(self) -> Any:
        return self._exception_handler

    def set_exception_handler(self, handler: Any) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        if self._closed:
            return
        exc = context.get("exception")
        _log.error(
            "unhandled error in durable code: %s",
            context.get("message", "error"),
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)
        if self._exception_handler is not None:
            self._exception_handler(self, context)
        else:
            self.default_exception_handler(context)

    def _asyncgen_firstiter(self, agen: Any) -> None:
        pass

    def _asyncgen_finalizer(self, agen: Any) -> None:
        if not self._closed:
            self.call_soon(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        pass

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        pass

    def __repr__(self) -> str:
        return f"<DurableLoop clock={self._clock:.6f} ready={len(self.ready)} timers={len(self._timers)}>"


REFUSED_IO: dict[str, str] = {
    "create_connection": "open a network connection",
    "create_unix_connection": "open a network connection",
    "create_server": "serve network connections",
    "create_unix_server": "serve network connections",
    "create_datagram_endpoint": "open a datagram endpoint",
    "connect_accepted_socket": "use a socket",
    "sock_recv": "use a socket",
    "sock_recv_into": "use a socket",
    "sock_recvfrom": "use a socket",
    "sock_recvfrom_into": "use a socket",
    "sock_sendall": "use a socket",
    "sock_sendto": "use a socket",
    "sock_connect": "use a socket",
    "sock_accept": "use a socket",
    "sock_sendfile": "use a socket",
    "sendfile": "send a file",
    "start_tls": "start TLS",
    "getaddrinfo": "resolve host names",
    "getnameinfo": "resolve host names",
    "add_reader": "watch a file descriptor",
    "remove_reader": "watch a file descriptor",
    "add_writer": "watch a file descriptor",
    "remove_writer": "watch a file descriptor",
    "connect_read_pipe": "use a pipe",
    "connect_write_pipe": "use a pipe",
    "subprocess_exec": "run a subprocess",
    "subprocess_shell": "run a subprocess",
    "add_signal_handler": "handle OS signals",
    "remove_signal_handler": "handle OS signals",
    "run_in_executor": "run work in an executor",
    "set_default_executor": "run work in an executor",
    "call_soon_threadsafe": "take callbacks from other threads",
}
"""The loop methods durable code may not use, and what each would have done."""

_IN_A_THREAD = frozenset(
    {"run_in_executor", "set_default_executor", "call_soon_threadsafe"}
)


def _refuser(name: str, action: str) -> Callable[..., Any]:
    where = "a plain-def @duron.effect (it runs in a worker thread)"
    effect = where if name in _IN_A_THREAD else "an @duron.effect"
    message = (
        f"durable code cannot {action} (loop.{name}): it would not be recorded, "
        f"and a replay would do it again; do it in {effect} and await it with "
        "ctx.run"
    )

    def refuse(self: DurableLoop, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(message)

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Refused: durable code cannot {action}."
    return refuse


for _name, _action in REFUSED_IO.items():
    setattr(DurableLoop, _name, _refuser(_name, _action))
