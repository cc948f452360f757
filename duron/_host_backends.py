"""Host backends: what the job driver needs from the event loop the job runs on.

Three things: start a task (cancellable), sleep until woken or until a deadline,
and stop everything it started. :class:`AsyncioHost` maps them straight onto the
asyncio loop (a task, a future, ``call_later``) and can start an ``async def``
effect as a bare task whose first step runs at once, which keeps a live effect's
overhead to a few microseconds. :class:`AnyioHost` serves any other anyio backend
(trio) through a task group, cancel scopes and events: portable, but heavier.
Effects are started through :mod:`duron._effect_runner`, which picks the way.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks as _tasks
import contextvars
import sys
from asyncio import events
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import anyio.lowlevel


def _current_library() -> str:
    try:
        import sniffio
    except ImportError:  # pragma: no cover - sniffio comes with anyio
        return "asyncio"
    return sniffio.current_async_library()


if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["AnyioHost", "AsyncioHost", "Cancellable", "Host", "host_for"]

_T = TypeVar("_T")


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Host(Protocol):
    """What the driver needs from a host backend (:class:`AsyncioHost`,
    :class:`AnyioHost`)."""

    def spawn(
        self,
        fn: Callable[..., Awaitable[None]],
        *args: Any,
        name: str,
        context: contextvars.Context | None = None,
    ) -> Cancellable:
        """Start ``fn(*args)`` as a task (in a copy of ``context``, if given, made
        by :meth:`effect_context`); the handle cancels it."""
        ...

    def effect_context(self) -> contextvars.Context:
        """A new copy of the context effects run in, to set variables in."""
        ...

    def wake(self) -> None:
        """End the current :meth:`sleep` (no-op when nobody sleeps)."""
        ...

    async def sleep(self, delay: float | None) -> None:
        """Sleep until :meth:`wake` is called, or ``delay`` seconds pass."""
        ...

    async def aclose(self) -> None:
        """Cancel every task started here and wait for them to end."""
        ...

    async def checkpoint(self) -> None:
        """Let the host's other tasks run."""
        ...


def host_for(tg: TaskGroup) -> AsyncioHost | AnyioHost:
    """The cheapest host backend for the running event loop (``tg`` runs its tasks
    on any backend but asyncio)."""
    if _current_library() == "asyncio":
        return AsyncioHost()
    return AnyioHost(tg)


_EAGER: dict[str, Any] = {"eager_start": True} if sys.version_info >= (3, 12) else {}


def _start_now(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Eager start before 3.12: run the step ``create_task`` just scheduled, now.

    What 3.12's ``eager_start`` does, done by hand on the loops whose internals are
    known (the standard loop keeps its ready queue in ``_ready``): take the task's
    first step off the queue and run it with the task as the current one. On any
    other loop (uvloop...) the task simply starts on the next round.
    """
    # The standard loop's and asyncio's private parts, read where they are known.
    ready = getattr(loop, "_ready", None)
    if not ready:
        return
    handle = ready[-1]
    if getattr(handle._callback, "__self__", None) is not task:  # pyright: ignore[reportPrivateUsage]
        return
    ready.pop()
    current = asyncio.current_task(loop)
    if current is not None:
        _tasks._leave_task(loop, current)  # pyright: ignore[reportPrivateUsage]
    try:
        handle._run()  # pyright: ignore[reportPrivateUsage]
    finally:
        if current is not None:
            _tasks._enter_task(loop, current)  # pyright: ignore[reportPrivateUsage]


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AsyncioHost:
    __slots__ = ("_context", "_fut", "_hooks", "_loop", "_tasks")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fut: asyncio.Future[None] | None = None
        # Effects run in a copy of the driver's context, wherever they are started
        # from, and first-iterate async generators under the host's hooks.
        self._context = contextvars.copy_context()
        self._hooks = sys.get_asyncgen_hooks()

    def spawn(
        self,
        fn: Callable[..., Awaitable[None]],
        *args: Any,
        name: str,
        context: contextvars.Context | None = None,
    ) -> Cancellable:
        return self._start(fn(*args), name, context)  # type: ignore[arg-type]

    def effect_context(self) -> contextvars.Context:
        return self._context.copy()

    def provide(self, var: contextvars.ContextVar[_T], value: _T) -> None:
        """Set ``var`` for every task started here from now on."""
        self._context.run(var.set, value)

    def start_effect(
        self,
        fn: Callable[..., Coroutine[Any, Any, _T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        *,
        from_durable: bool = False,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        """Start ``fn(*args, **kwargs)`` as a task, its first step run here (what
        ``fn`` raises when called propagates). ``from_durable``: called from inside
        durable code; the call and the first step still happen on the host loop,
        under the host's asyncgen hooks. ``context``: run it in this one (from
        :meth:`effect_context`) instead of a fresh copy of the host's."""
        if not from_durable:
            return self._start(fn(*args, **kwargs), name, context)
        durable = events._get_running_loop()
        hooks = sys.get_asyncgen_hooks()
        events._set_running_loop(self._loop)
        sys.set_asyncgen_hooks(*self._hooks)
        try:
            return self._start(fn(*args, **kwargs), name, context)
        finally:
            sys.set_asyncgen_hooks(*hooks)
            events._set_running_loop(durable)

    def _start(
        self,
        coro: Coroutine[Any, Any, _T],
        name: str,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        # Eager start: the effect runs until its first real wait right here,
        # which spares a round of the host loop before it begins (and all of
        # them for an effect that never waits).
        if context is None:
            context = self._context.copy()
        task: asyncio.Task[_T] = context.run(
            asyncio.Task,  # type: ignore[arg-type]
            coro,
            loop=self._loop,
            name=name,
            **_EAGER,
        )
        if not _EAGER:
            _start_now(self._loop, task)
        if task.done():
            return task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def wake(self) -> None:
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def sleep(self, delay: float | None) -> None:
        self._fut = fut = self._loop.create_future()
        try:
            if delay is None:
                await fut
            else:
                handle = self._loop.call_later(delay, _wake_future, fut)
                try:
                    await fut
                finally:
                    handle.cancel()
        finally:
            self._fut = None

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _Scoped:
    __slots__ = ("cancelled", "scope")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class AnyioHost:
    __slots__ = ("_event", "_handles", "_tg")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._event: anyio.Event | None = None
        self._handles: set[_Scoped] = set()

    def spawn(
        self,
        fn: Callable[..., Awaitable[None]],
        *args: Any,
        name: str,
        context: contextvars.Context | None = None,
    ) -> Cancellable:
        handle = _Scoped()
        self._handles.add(handle)
        if context is None:
            self._tg.start_soon(self._run, handle, fn, args, name=name)
        else:  # the new task copies the context it is started from
            context.run(
                lambda: self._tg.start_soon(self._run, handle, fn, args, name=name)
            )
        return handle

    def effect_context(self) -> contextvars.Context:
        return contextvars.copy_context()

    async def _run(
        self, handle: _Scoped, fn: Callable[..., Awaitable[None]], args: tuple[Any, ...]
    ) -> None:
        try:
            with anyio.CancelScope() as scope:
                handle.scope = scope
                if handle.cancelled:
                    return
                await fn(*args)
        finally:
            self._handles.discard(handle)

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()

    async def sleep(self, delay: float | None) -> None:
        self._event = event = anyio.Event()
        try:
            if delay is None:
                await event.wait()
            else:
                with anyio.move_on_after(delay):
                    await event.wait()
        finally:
            self._event = None

    async def checkpoint(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        for handle in list(self._handles):
            handle.cancel()
