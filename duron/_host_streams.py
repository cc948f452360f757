"""The host's ends of a job's injected streams and signals (``job.open_stream``).

* A durable parameter ``Stream[T]`` or ``Signal[T]`` (host -> job) is opened with
  mode ``"w"``: :class:`HostWriter`. Each value is validated, recorded in the log
  when it arrives, and delivered to the durable code at that point, on the first run
  and on every replay.
* A durable parameter ``StreamWriter[T]`` (job -> host) is opened with mode ``"r"``:
  :class:`HostReader`, an async iterator. Values are not recorded (replay produces
  them again), so a reader opened after a restart sees every value from the start,
  or from the ``start`` index it passes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio

from duron._codec import Codec, roundtrip
from duron._operations import Output
from duron._recorded_errors import error_info

__all__ = ["HostReader", "HostWriter", "OutputChannel"]

_T = TypeVar("_T")


class _RunState(Protocol):
    live: anyio.Event
    ended: bool


class OutputChannel:
    """Values the durable code sends to the host, kept for readers to replay."""

    __slots__ = (
        "_wake",
        "annotation",
        "closed",
        "codec",
        "error",
        "name",
        "record",
        "values",
    )

    def __init__(self, name: str, annotation: Any, codec: Codec) -> None:
        self.name: str = name
        self.annotation: Any = annotation
        self.codec: Codec = codec
        self.values: list[Any] = []
        self.closed: bool = False
        self.error: BaseException | None = None
        self._wake: anyio.Event | None = None
        # Set when the storage keeps output: each value and the close, to record.
        self.record: Callable[[Output], None] | None = None

    # durable side (called from durable code through StreamWriter)
    def put(self, value: Any) -> None:
        if self.closed:
            from duron._stream import StreamClosed

            raise StreamClosed(f"stream {self.name} is closed")
        data, value = roundtrip(
            self.codec,
            value,
            self.annotation,
            what=f"value sent to stream {self.name!r}",
        )
        self.values.append(value)
        if self.record is not None:
            self.record(Output(self.name, data))
        self.notify()

    def close(self, error: BaseException | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.error = error
            if self.record is not None:
                self.record(self.close_record())
            self.notify()

    def close_record(self) -> Output:
        """The close, as recorded for readers in other processes."""
        info = error_info(self.error) if self.error is not None else None
        return Output(self.name, None, True, info)

    def notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    # host side
    async def wait_for_more(self) -> None:
        if self._wake is None:
            self._wake = anyio.Event()
        await self._wake.wait()


class HostReader(Generic[_T]):
    """Reads what the durable code sends on a ``StreamWriter`` parameter.

    Iteration ends when the durable code closes the stream or the job ends; a
    stream closed with an error raises it.
    """

    def __init__(
        self, channel: OutputChannel, runtime: _RunState, start: int = 0
    ) -> None:
        self._ch = channel
        self._run = runtime
        self._index = start

    def __aiter__(self) -> HostReader[_T]:
        return self

    async def __anext__(self) -> _T:
        ch = self._ch
        # Values appear once replay is over, so what the host sees next to them
        # (e.g. job.is_future_pending) is already the live state.
        await self._run.live.wait()
        while self._index >= len(ch.values):
            if ch.closed:
                if ch.error is not None:
                    raise ch.error
                raise StopAsyncIteration
            if self._run.ended:
                raise StopAsyncIteration
            await ch.wait_for_more()
        value = ch.values[self._index]
        self._index += 1
        return value  # type: ignore[no-any-return]

    @property
    def position(self) -> int:
        """How many values this reader has consumed (pass as ``start`` to resume)."""
        return self._index


class HostWriter(Generic[_T]):
    """Sends values into a durable ``Stream`` or ``Signal`` parameter."""

    def __init__(
        self,
        name: str,
        annotation: Any,
        codec: Codec,
        submit: Callable[[str, Any, BaseException | None, bool], Awaitable[None]],
        count: Callable[[str], Awaitable[int]],
    ) -> None:
        self._name = name
        self._annotation = annotation
        self._codec = codec
        self._submit = submit
        self._count = count

    async def recorded(self) -> int:
        """How many values of this input the log holds, once replay is over.

        A host that restarts with a job can skip what the job already has: values
        ``0 .. recorded() - 1`` of what it meant to send were delivered before.
        """
        return await self._count(self._name)

    async def send(self, value: _T) -> None:
        """Validate, record and deliver ``value``; returns once it is in the log.

        Raises:
            PayloadEncodeError: The value does not validate as the parameter's type
                (nothing is written).
        """
        data, _ = roundtrip(
            self._codec, value, self._annotation, what=f"value sent to {self._name!r}"
        )
        await self._submit(self._name, data, None, False)

    async def close(self, error: BaseException | None = None) -> None:
        """End the stream; durable readers then stop (or raise ``error``)."""
        await self._submit(self._name, None, error, True)
