"""Streams inside durable code: an ordered channel read with ``async for``.

A :class:`Stream` is the reading end, a :class:`StreamWriter` the writing end. Both
live on the durable loop; values reach them at deterministic points (from other
durable tasks, or recorded deliveries), so replay sees them at the same place.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

__all__ = ["Channel", "Stream", "StreamClosed", "StreamWriter", "channel"]

_T = TypeVar("_T")


class StreamClosed(Exception):
    """Sending to a stream that is already closed."""


class Channel(Generic[_T]):
    """The buffer between a stream's ends, on the durable loop."""

    __slots__ = ("closed", "error", "items", "name", "waiters")

    def __init__(self, name: str) -> None:
        self.name: str = name
        self.items: deque[_T] = deque()
        self.closed: bool = False
        self.error: BaseException | None = None
        self.waiters: deque[asyncio.Future[None]] = deque()

    def put(self, value: _T) -> None:
        if self.closed:
            raise StreamClosed(f"stream {self.name} is closed")
        self.items.append(value)
        self._wake()

    def close(self, error: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        self._wake(all_=True)

    def _wake(self, *, all_: bool = False) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                if not all_:
                    return


class Stream(Generic[_T]):
    """The reading end of a stream: ``async for value in stream``.

    Iteration ends when the writer closes the stream; if it was closed with an
    error, the reader raises that error instead of ending quietly.
    """

    __slots__ = ("_ch",)

    def __init__(self, channel: Channel[_T]) -> None:
        self._ch = channel

    def __aiter__(self) -> Stream[_T]:
        return self

    async def __anext__(self) -> _T:
        ch = self._ch
        while not ch.items:
            if ch.closed:
                if ch.error is not None:
                    raise ch.error
                raise StopAsyncIteration
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ch.waiters.append(fut)
            await fut
        return ch.items.popleft()

    async def next(self) -> _T:
        """The next value; raises ``StopAsyncIteration`` once the stream ended."""
        return await self.__anext__()

    def __repr__(self) -> str:
        return f"<Stream {self._ch.name} buffered={len(self._ch.items)} closed={self._ch.closed}>"


class StreamWriter(Generic[_T]):
    """The writing end of a stream."""

    __slots__ = ("_ch",)

    def __init__(self, channel: Channel[_T]) -> None:
        self._ch = channel

    async def send(self, value: _T) -> None:
        """Append ``value`` to the stream."""
        self._ch.put(value)

    async def close(self, error: BaseException | None = None) -> None:
        """End the stream; with ``error``, readers raise it instead of stopping."""
        self._ch.close(error)

    def __repr__(self) -> str:
        return f"<StreamWriter {self._ch.name} closed={self._ch.closed}>"


def channel(name: str) -> tuple[Stream[Any], StreamWriter[Any]]:
    ch: Channel[Any] = Channel(name)
    return Stream(ch), StreamWriter(ch)
