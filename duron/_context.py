"""``Context``: what durable code uses to reach the world deterministically."""

from __future__ import annotations

import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
)
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from duron._effect import effect_spec
from duron._errors import UsageError
from duron._stream import Stream, StreamWriter, channel

if TYPE_CHECKING:
    from duron._runtime import Runtime

__all__ = ["Context"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")


class Context:
    """The durable function's handle on the job. Given as its first argument.

    Do not construct it yourself; it is only valid inside the durable function it
    was passed to.
    """

    __slots__ = ("_rt",)

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

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
        return await self._rt.issue_effect(effect_spec(fn), args, kwargs)

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

        Returns:
            An async context manager giving ``(partial states, final state)``.
        """
        spec = effect_spec(fn)
        if spec.kind != "stream":
            raise UsageError(
                f"ctx.stream needs a streaming effect (an async generator); "
                f"{spec.name} is not one: use ctx.run"
            )
        reader, writer = channel(f"{spec.name} states")
        fut = self._rt.issue_effect(spec, (initial, *args), kwargs, sink=writer)
        try:
            yield reader, fut
        finally:
            if not fut.done():
                fut.cancel()

    async def create_stream(
        self, dtype: type[_T] | Any, /, *, name: str | None = None
    ) -> tuple[Stream[_T], StreamWriter[_T]]:
        """A stream between tasks of this durable function.

        Args:
            dtype: The type of its values (documentation; values stay in memory).
            name: A name shown in ``repr``.

        Returns:
            ``(reader, writer)``.
        """
        return channel(name or "stream")

    async def time(self) -> float:
        """The job's clock in seconds since the epoch: recorded, so replay sees the same.

        Use it instead of ``time.time()``. ``asyncio.sleep`` and timeouts in durable
        code run on this clock too.
        """
        return self._rt.loop.time()

    async def time_ns(self) -> int:
        """:meth:`time` in integer nanoseconds."""
        return int(self._rt.loop.time() * 1e9)

    def random(self) -> random.Random:
        """A ``random.Random`` seeded deterministically for this point of the job.

        Each call returns a new generator; the n-th call of a job always gets the
        same seed, on the first run and on every replay.
        """
        return random.Random(self._rt.next_random_seed())

    def __repr__(self) -> str:
        return f"<duron.Context job={self._rt.label}>"
