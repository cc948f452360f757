"""Signals: interrupt a block of durable code when a value arrives.

```python
async with interrupt:  # a duron.Signal[T]
    reply = await ctx.run(call_model, history)
```

When a value is sent to the signal while a task is inside such a block, that task is
cancelled at its current ``await`` and the block raises :class:`SignalInterrupt`
carrying the value. A value sent while no block is active is dropped: a signal
interrupts what is running now, it is not a queue (use a stream for that).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Signal", "SignalInterrupt"]

_T = TypeVar("_T")


class SignalInterrupt(Exception):
    """Raised by ``async with signal:`` when the signal fired inside the block.

    Attributes:
        value: The value sent to the signal.
    """

    def __init__(self, value: Any = None) -> None:
        self.value = value
        super().__init__(value)


class _Block:
    __slots__ = ("task", "triggered", "value")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.triggered = False
        self.value: Any = None


class Signal(Generic[_T]):
    """Interrupts ``async with`` blocks when a value is sent to it.

    Blocks nest: an inner block of the same signal is the one interrupted; an outer
    block sees the inner :class:`SignalInterrupt` propagate unless it is caught.
    """

    __slots__ = ("_blocks", "name")

    def __init__(self, name: str = "signal") -> None:
        self.name: str = name
        self._blocks: list[_Block] = []

    async def __aenter__(self) -> Signal[_T]:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task in durable code
            raise RuntimeError("async with signal: needs a running task")
        self._blocks.append(_Block(task))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:  # never swallows: type checkers see code after the block
        block = self._blocks.pop()
        if not block.triggered:
            return False
        if sys.version_info >= (3, 11):
            block.task.uncancel()
        if isinstance(exc, asyncio.CancelledError) or exc is None:
            raise SignalInterrupt(block.value) from None
        return False  # another exception escaped the block first: let it through

    def trigger(self, value: _T) -> bool:
        """Interrupt the innermost active block of each task; False if none is active."""
        seen: set[int] = set()
        fired = False
        for block in reversed(self._blocks):
            key = id(block.task)
            if key in seen or block.triggered:
                seen.add(key)
                continue
            seen.add(key)
            block.triggered = True
            block.value = value
            block.task.cancel(f"signal {self.name}")
            fired = True
        return fired

    def __repr__(self) -> str:
        return f"<Signal {self.name} active_blocks={len(self._blocks)}>"


class SignalWriter(Generic[_T]):
    """The sending end of a signal made with ``ctx.create_signal``."""

    __slots__ = ("_signal",)

    def __init__(self, signal: Signal[_T]) -> None:
        self._signal = signal

    async def send(self, value: _T) -> None:
        """Fire the signal with ``value`` (dropped if no block is active)."""
        self._signal.trigger(value)

    async def close(self, error: BaseException | None = None) -> None:
        """Signals hold nothing to close; present so it reads like a stream writer."""
