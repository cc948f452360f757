"""Runtime state of operations, and the events that finish them.

An operation is anything durable code waits on that the log must record: an effect,
a durable future, a host input (stream or signal parameter), a patch marker. Its
:class:`LiveOp` links the replay core's record, the future durable code awaits and,
for a live effect, the cancel scope of the task running it.

Events (:class:`Done`, :class:`Emitted`, :class:`CancelRequest`, :class:`Fatal`)
queue up in the driver; each batch of them is appended to the log before any is
delivered to durable code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from duron._codec import UNANNOTATED
from duron._effect import EffectSpec
from duron._entries import ErrorInfo
from duron._hostloop import Cancellable
from duron._json import JSONValue
from duron._replay import OpRecord

__all__ = [
    "UNDECODED",
    "CancelRequest",
    "Done",
    "Emitted",
    "Event",
    "Fatal",
    "LiveOp",
    "OpFuture",
    "Outcome",
    "Recorded",
    "op_future",
]

UNDECODED: Any = object()
"""Marks an outcome whose value durable code has not seen decoded yet."""


class OpFuture(asyncio.Future[Any]):
    """The future durable code awaits for an operation.

    Cancelling it (durable code gave up: a timeout, a cancelled task) tells the
    driver at once, without the cost of a done-callback on every operation.
    """

    __slots__ = ("_lop", "_on_cancel")

    # Set right after construction (see :func:`op_future`): no __init__ of its own
    # keeps the C constructor, which is half the cost of one written in Python.
    _lop: LiveOp
    _on_cancel: Callable[[LiveOp], None]

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._on_cancel(self._lop)
        return True


def op_future(
    loop: asyncio.AbstractEventLoop, lop: LiveOp, on_cancel: Callable[[LiveOp], None]
) -> OpFuture:
    """The future for ``lop`` (which it becomes ``lop.fut`` of)."""
    fut = OpFuture(loop=loop)
    fut._lop = lop
    fut._on_cancel = on_cancel
    lop.fut = fut
    return fut


@dataclass(slots=True, eq=False)
class LiveOp:
    """One operation: what it is, the future durable code awaits, its live task."""

    rec: OpRecord
    fut: asyncio.Future[Any]
    spec: EffectSpec | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    scope: Cancellable | None = None  # the live task running it
    state: Any = None
    sink: Any = None  # stream channel receiving a streaming effect's partial states
    annotation: Any = UNANNOTATED  # value type of a future or host input
    target: Any = None  # channel or Signal a host input feeds
    abandoned: bool = False  # durable code cancelled its wait: record nothing more
    closed: bool = False  # host input closed


@dataclass(slots=True, eq=False)
class Done:
    op: LiveOp
    result: JSONValue = None
    error: ErrorInfo | None = None
    cause: BaseException | None = None
    decoded: Any = UNDECODED
    ack: anyio.Event | None = None
    recorded: bool = False


@dataclass(slots=True, eq=False)
class Emitted:
    op: LiveOp
    value: JSONValue
    decoded: Any = UNDECODED
    ack: anyio.Event | None = None
    recorded: bool = False


@dataclass(slots=True, eq=False)
class CancelRequest:
    ack: anyio.Event | None = None
    recorded: bool = False


@dataclass(slots=True, eq=False)
class Fatal:
    error: BaseException


Event = Done | Emitted | CancelRequest | Fatal


@dataclass(slots=True)
class Recorded:
    """A replayed effect's outcome, handed to durable code without a future."""

    value: Any
    error: BaseException | None


@dataclass(slots=True)
class Outcome:
    """How a job ended: a decoded result, or an exception to raise from ``wait()``."""

    result: Any = None
    error: BaseException | None = None
    recorded_error: ErrorInfo | None = None
    position: int = 0
    finished: bool = True  # False: replay stopped where an unfinished log ends
