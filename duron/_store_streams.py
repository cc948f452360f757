"""A job's streams reached through its store, by job id, from any process.

``store.open_stream(job_id, name, "w")`` gives a :class:`StoreWriter`: each value
is checked and stored in the job's inbox, and the job records it in its log when it
receives it (wherever and whenever it runs). ``store.open_stream(job_id, name,
"r")`` gives a :class:`StoreReader`: what the durable code sent on a
``StreamWriter`` parameter, read from the job's log from any position, following
it live until the stream or the job ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from duron._inbox import stream_sending

if TYPE_CHECKING:
    from duron._durable import DurableFn
    from duron._inbox import Sending

__all__ = ["StoreReader", "StoreWriter"]

_T = TypeVar("_T")


class StoreWriter(Generic[_T]):
    """Sends values into a job's ``Stream[T]`` or ``Signal[T]`` parameter through
    its store. Get one from ``store.open_stream(job_id, name, "w")``.

    Each call returns once the item is stored in the job's inbox (it survives a
    crash of any process from then on); the job records it in its log, exactly
    once, when it receives it. Do not construct it yourself.
    """

    def __init__(
        self,
        dfn: DurableFn[..., Any],
        job_id: str,
        name: str,
        put: Callable[[Sending], Awaitable[None]],
    ) -> None:
        self._dfn = dfn
        self._job_id = job_id
        self._name = name
        self._put = put

    @property
    def name(self) -> str:
        """The parameter's name."""
        return self._name

    async def send(self, value: _T) -> None:
        """Validate ``value`` as the parameter's type and store it for the job.

        Raises:
            PayloadEncodeError: ``value`` does not validate (nothing is stored).
            UsageError: The job ended, or the stream was closed.
            JobNotFoundError: The job is gone.
        """
        await self._put(
            stream_sending(self._dfn, self._job_id, self._name, value=value)
        )

    async def close(self, error: BaseException | None = None) -> None:
        """End the stream: durable readers stop once they reach it (or raise
        ``error``).

        Raises:
            UsageError: The job ended, or the stream was already closed.
            JobNotFoundError: The job is gone.
        """
        await self._put(
            stream_sending(self._dfn, self._job_id, self._name, close=True, error=error)
        )

    def __repr__(self) -> str:
        return f"<StoreWriter {self._name} of job {self._job_id}>"


class StoreReader(Generic[_T]):
    """What a job's durable code sends on a ``StreamWriter[T]`` parameter, read
    from its log through the store. Get one from
    ``store.open_stream(job_id, name, "r", start=0)``.

    An async iterator of the values from index ``start`` on, decoded into the
    parameter's type; with ``follow`` (the default) it waits for more until the
    durable code closes the stream or the job ends, else it stops at the end of
    what the log holds now. A stream closed with an error raises it. Do not
    construct it yourself.
    """

    def __init__(self, values: AsyncIterator[_T], start: int) -> None:
        self._values = values
        self._index = start

    def __aiter__(self) -> StoreReader[_T]:
        return self

    async def __anext__(self) -> _T:
        value = await self._values.__anext__()
        self._index += 1
        return value

    @property
    def position(self) -> int:
        """The index of the next value (pass as ``start`` to go on from here)."""
        return self._index

    async def aclose(self) -> None:
        """Stop reading (``async for`` leaving early does not need it)."""
        aclose = getattr(self._values, "aclose", None)
        if aclose is not None:
            await aclose()
