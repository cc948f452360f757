"""``Context``: what durable code uses to reach the world deterministically."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
)
from contextlib import asynccontextmanager
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    NoReturn,
    ParamSpec,
    TypeVar,
    overload,
)

from duron._child_jobs import ChildJob, start_job
from duron._durable_calls import Recorded
from duron._effect import effect_spec
from duron._errors import UsageError
from duron._options import EffectOptions
from duron._signal import Signal, SignalWriter
from duron._stream import Channel, Stream, StreamWriter, channel

if TYPE_CHECKING:
    from duron._driver import Driver
    from duron._durable import DurableFn
    from duron._durable_calls import DurableCalls
    from duron._durable_logger import DurableLogger
    from duron._retry import RetryPolicy

__all__ = ["Context", "PatchQuery", "root_call"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")


def root_call(
    dfn: DurableFn[..., Any], driver: Driver, args: dict[str, Any]
) -> Callable[[], Coroutine[Any, Any, Any]]:
    """The durable function's call for one run: its context, its (decoded)
    arguments by name and the run's ``= duron.Provided`` objects."""
    ctx = Context(driver)
    fn: Any = dfn.fn
    call_args, call_kwargs = dfn.sig.call_arguments({**args, **driver.injected})

    async def main() -> Any:
        return await fn(ctx, *call_args, **call_kwargs)

    return main


class PatchQuery:
    """The answer of ``ctx.patched(change_id)``, once awaited (a ``bool``).

    It has no truth value of its own: ``if ctx.patched("id"):`` without ``await``
    raises :class:`~duron.UsageError` rather than always taking the new path.
    Do not construct it yourself.
    """

    __slots__ = ("_awaited", "_calls", "change_id")

    def __init__(self, calls: DurableCalls, change_id: str) -> None:
        self._calls = calls
        self.change_id: str = change_id
        self._awaited = False

    def __await__(self) -> Generator[Any, None, bool]:
        if self._awaited:
            raise UsageError(
                f"ctx.patched({self.change_id!r}) was already awaited; ask again "
                "with a new ctx.patched(...) call"
            )
        self._awaited = True
        return self._calls.patch_query(self.change_id).__await__()

    def __bool__(self) -> NoReturn:
        raise UsageError(
            f"ctx.patched({self.change_id!r}) must be awaited: write "
            f"`if await ctx.patched({self.change_id!r}):` (without await it would "
            "always take the new path)"
        )

    def __repr__(self) -> str:
        return f"<PatchQuery {self.change_id!r}>"


class Context:
    """The durable function's handle on the job. Given as its first argument.

    Do not construct it yourself; it is only valid inside the durable function it
    was passed to.
    """

    __slots__ = ("_calls", "_logger", "_options")

    def __init__(self, driver: Driver) -> None:
        self._calls = driver.calls
        self._logger: DurableLogger | None = None
        self._options: EffectOptions | None = None

    @property
    def logger(self) -> DurableLogger:
        """A logger for durable code whose records replay does not repeat.

        A :class:`logging.LoggerAdapter` of the ``duron.job`` logger: records are
        dropped while the job replays what its log recorded, and carry the job's
        id, function and position (``record.duron_job``,
        ``record.duron_function``, ``record.duron_position``).

        Example:
            ```python
            ctx.logger.info("charging order %s", order_id)
            ```
        """
        logger = self._logger
        if logger is None:
            logger = self._logger = self._calls.logger(logging.getLogger("duron.job"))
        return logger

    def logger_for(self, logger: logging.Logger | str) -> DurableLogger:
        """:attr:`logger` for another logger (or logger name), e.g. the module's own.

        Args:
            logger: A logger, or the name ``logging.getLogger`` takes.

        Returns:
            An adapter of it that is silent while the job replays.
        """
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        return self._calls.logger(logger)

    @property
    def job_id(self) -> str:
        """The job's id: its id in a job store, or its log's label (a file log's
        path). The same on every run and replay of the job."""
        return self._calls.label

    def options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
    ) -> Context:
        """This context, running effects with these options (over the ones each
        effect declares with ``@duron.effect(...)``).

        The options of a call are not the effect's arguments, so they travel on
        the context: ``await ctx.options(timeout=5).run(charge, order)``. A
        changed option is no change to the log: a job replays its recorded
        attempts whatever the policy says today.

        Example:
            ```python
            patient = ctx.options(retry=duron.RetryPolicy(max_attempts=10))
            receipt = await patient.run(charge, order)
            ```

        Args:
            retry: How a failed attempt is tried again (see
                :class:`~duron.RetryPolicy`).
            timeout: Seconds one attempt may run before it is cancelled and
                counts as failed (a ``TimeoutError``).
            total_timeout: Seconds the whole call may take, every attempt and
                backoff included.

        Returns:
            A context that runs effects with these options; ``ctx`` itself is
            unchanged.

        Raises:
            UsageError: A bad value, naming the option.
        """
        current = self._options or EffectOptions()
        merged = current.merged(
            "ctx.options", retry=retry, timeout=timeout, total_timeout=total_timeout
        )
        if merged is current:
            return self
        ctx = Context.__new__(Context)
        ctx._calls = self._calls
        ctx._logger = self._logger
        ctx._options = merged
        return ctx

    @overload
    async def run(
        self,
        fn: Callable[_P, Coroutine[Any, Any, _T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T: ...
    @overload
    async def run(
        self,
        fn: Callable[Concatenate[_S, _P], AsyncGenerator[Any, _S]],
        initial: _S,
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _S: ...
    @overload
    async def run(
        self,
        fn: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T: ...
    @overload
    async def run(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T: ...
    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run an effect once per job and return its (recorded) result.

        On replay the recorded result is returned without running ``fn``. The value
        returned is always the decoded one (validated into ``fn``'s annotated return
        type), on the first run as on replay. An exception the effect raised is
        re-raised as its own type.

        Args:
            fn: An ``@duron.effect`` function, or any callable: an ``async def``, a
                plain ``def`` (run in a worker thread), a lambda returning an
                awaitable, or a streaming effect (pass its initial state first).
            *args: Arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            The effect's result (for a streaming effect: its final state).

        Raises:
            NonDeterminismError: The log recorded another call at this position.
            PayloadError: An argument cannot be encoded.
        """
        spec = effect_spec(fn)
        if self._options is not None:
            spec = spec.with_options(self._options, "ctx.options")
        out = self._calls.issue_effect(spec, args, kwargs)
        if type(out) is Recorded:  # replayed at once: no future needed
            if out.error is not None:
                raise out.error
            return out.value
        return await out  # type: ignore[misc]

    async def start_job(
        self, fn: DurableFn[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> ChildJob[_T]:
        """Start ``fn(*args, **kwargs)`` as a child job; await the handle for its
        result.

        On a job store the child is a job of its own: its own log and id (the
        parent's id and this position, or ``fn.options(job_id=...)``), listed
        with its parent (``store.list_jobs(parent=...)``), run by any worker.
        The parent waits on it like on a future: a waiting parent is suspended
        and holds no worker. Its error reaches the parent as its own type; a
        cancelled child as :class:`~duron.JobCancelledError`. Cancelling the
        parent through the store cancels its children too (unless
        ``store.cancel(id, children=False)``).

        On a log of its own (a file, memory) the child runs inline, as a task of
        the parent, its effects recorded in the parent's log.

        Example:
            ```python
            children = [await ctx.start_job(ship, item) for item in order.items]
            receipts = await asyncio.gather(*children)
            ```

        Returns:
            The child's handle (:class:`~duron.ChildJob`): ``await`` it.

        Raises:
            UsageError: ``fn`` is not a durable function, or bad arguments.
            PayloadError: An argument cannot be encoded.
            DuplicateJobError: ``fn.options(job_id=...)`` names a job with
                another call.
        """
        return await start_job(self, self._calls, fn, args, kwargs)

    async def run_job(
        self, fn: DurableFn[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``fn(*args, **kwargs)`` as a child job and return its result:
        ``await (await ctx.start_job(fn, ...))``."""
        child = await start_job(self, self._calls, fn, args, kwargs)
        return await child

    @asynccontextmanager
    async def stream(
        self,
        fn: Callable[Concatenate[_S, _P], AsyncGenerator[Any, _S]],
        initial: _S,
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> AsyncIterator[tuple[Stream[_S], Awaitable[_S]]]:
        """Run a streaming effect and watch its partial states as they are recorded.

        Example:
            ```python
            async with ctx.stream(count_up, 0, 5) as (states, final):
                async for state in states:
                    print("progress", state)
                total = await final
            ```

        Args:
            fn: A streaming effect (an async generator function).
            initial: The state to start from (its first parameter).
            *args: The effect's other arguments.
            **kwargs: Its keyword arguments.

        Returns:
            An async context manager giving ``(partial states, final state)``: a
            stream of the state after each recorded action, and an awaitable of
            the final state (what ``ctx.run`` would return).

        Raises:
            UsageError: ``fn`` is not a streaming effect.
        """
        spec = effect_spec(fn)
        if spec.kind != "stream":
            raise UsageError(
                f"ctx.stream needs a streaming effect (an async generator); "
                f"{spec.name} is not one: use ctx.run"
            )
        if self._options is not None:
            spec = spec.with_options(self._options, "ctx.options")
        states: Channel[Any] = Channel(f"{spec.name} states")
        fut = self._calls.issue_effect(spec, (initial, *args), kwargs, sink=states)
        assert isinstance(fut, asyncio.Future)  # a sink never takes the shortcut
        try:
            yield Stream(states), fut
        finally:
            if not fut.done():
                fut.cancel()

    @overload
    async def create_stream(
        self, dtype: type[_T], /, *, name: str | None = None
    ) -> tuple[Stream[_T], StreamWriter[_T]]: ...
    @overload
    async def create_stream(
        self, dtype: Any, /, *, name: str | None = None
    ) -> tuple[Stream[Any], StreamWriter[Any]]: ...
    async def create_stream(
        self, dtype: Any, /, *, name: str | None = None
    ) -> tuple[Stream[Any], StreamWriter[Any]]:
        """A stream between tasks of this durable function.

        Args:
            dtype: The type of its values (documentation; values stay in memory).
            name: A name shown in ``repr``.

        Returns:
            ``(reader, writer)``.
        """
        return channel(name or "stream")

    @overload
    async def create_signal(
        self, dtype: type[_T], /, *, name: str | None = None
    ) -> tuple[Signal[_T], SignalWriter[_T]]: ...
    @overload
    async def create_signal(
        self, dtype: Any, /, *, name: str | None = None
    ) -> tuple[Signal[Any], SignalWriter[Any]]: ...
    async def create_signal(
        self, dtype: Any, /, *, name: str | None = None
    ) -> tuple[Signal[Any], SignalWriter[Any]]:
        """A signal between tasks of this durable function.

        Args:
            dtype: The type of the values it carries.
            name: A name shown in ``repr``.

        Returns:
            ``(signal, writer)``: ``async with signal:`` blocks are interrupted by
            ``await writer.send(value)``.
        """
        signal: Signal[Any] = Signal(name or "signal")
        return signal, SignalWriter(signal)

    @overload
    async def create_future(
        self, dtype: type[_T], /, *, name: str | None = None
    ) -> tuple[str, Awaitable[_T]]: ...
    @overload
    async def create_future(
        self, dtype: Any, /, *, name: str | None = None
    ) -> tuple[str, Awaitable[Any]]: ...
    async def create_future(
        self, dtype: Any, /, *, name: str | None = None
    ) -> tuple[str, Awaitable[Any]]:
        """A future the host completes: ``job.complete_future(id, result=...)``.

        The completion is recorded when it arrives and delivered at the same point
        on replay. Await it with ``asyncio.wait_for`` for a durable deadline.

        Args:
            dtype: The result's type: the host's value is validated against it.
            name: A name for logs and ``duron inspect``.

        Returns:
            ``(future_id, awaitable)``; send the id to whoever completes it.
        """
        return self._calls.issue_future(dtype, name)

    def patched(self, change_id: str) -> PatchQuery:
        """Whether this job takes the new code path introduced by ``change_id``.

        Await it: ``if await ctx.patched("id"):``. True for jobs that reach this
        point under code that has the patch (new jobs, and old jobs whose log ends
        before this point); False for logs that recorded something else here
        before the change. Keep both branches until no job that could answer False
        is still running, then remove the old one.

        Replay may have to read further into the log to answer, hence the await.
        Used without it (``if ctx.patched("id"):``), the query raises
        :class:`~duron.UsageError` instead of always being true.

        Example:
            ```python
            if await ctx.patched("send-receipt"):
                await ctx.run(send_receipt, order)
            ```
        """
        return PatchQuery(self._calls, change_id)

    async def time(self) -> float:
        """The job's clock in seconds since the epoch: recorded, so replay sees the same.

        Use it instead of ``time.time()``. ``asyncio.sleep`` and timeouts in durable
        code run on this clock too.
        """
        return self._calls.time()

    async def time_ns(self) -> int:
        """:meth:`time` in integer nanoseconds."""
        return int(self._calls.time() * 1e9)

    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """End this run of the job and continue the same job as new: the durable
        function starts again with these arguments, in a fresh log.

        A job that runs for months (a polling loop, a chat agent) calls it now
        and then so that its log stays small: a resumed job replays only its
        current run's log. The switch is atomic: after a crash the job either
        goes on in the old log or has started the new one, never both. The job
        keeps its id (a job store lists its runs; a file log's runs are named
        ``log.1.jsonl``, ``log.2.jsonl``...), its deadline and its context;
        ``job.wait()`` and ``store.result()`` give the last run's result.

        Effects still running are cancelled, as when the function returns. It
        raises :class:`~duron.ContinueAsNew`: let it propagate out of the
        durable function (an ``except Exception`` does not catch it).

        Args:
            *args: The durable function's arguments for the next run, after the
                context.
            **kwargs: Its keyword arguments (not the ``= duron.Provided`` ones).

        Raises:
            ContinueAsNew: Always: this run ends here.
            UsageError: Bad arguments for the durable function.
            PayloadError: An argument cannot be encoded, would not decode back,
                or makes a job entry over the storage's size limit.
        """
        self._calls.check_loop("ctx.continue_as_new()")
        raise self._calls.continue_as_new(args, kwargs)

    def random(self) -> random.Random:
        """A ``random.Random`` seeded deterministically for this point of the job.

        Each call returns a new generator; the n-th call of a job always gets the
        same seed, on the first run and on every replay.
        """
        return random.Random(self._calls.next_random_seed())

    def __repr__(self) -> str:
        options = "" if self._options is None else f" {self._options!r}"
        return f"<duron.Context job={self._calls.label}{options}>"
