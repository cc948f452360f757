"""Operations and what flows between the engine and the driver.

An :class:`Op` is one thing durable code waits on that the log records: an effect
call, a durable future, a host input (a stream or signal parameter), a patch
marker. The outcomes of operations (:class:`Done`, :class:`Emitted`) and the job's
own events (:class:`Cancelled`, :class:`Ended`) are the same records whether a live
run produced them or the engine read them back from the log; the driver handles
them with one ``match``. :class:`FireTimer`, :data:`NEED_ENTRIES` and
:data:`LOG_ENDED` are the engine's other answers while replaying.

Pure data: no I/O, no event loop (the engine imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from duron._entries import ErrorInfo, JobStarted, OpAttempted
from duron._errors import OperationCall
from duron._json import JSONValue, describe_operation

__all__ = [
    "LOG_ENDED",
    "NEED_ENTRIES",
    "UNDECODED",
    "Attempted",
    "Cancelled",
    "Done",
    "Emitted",
    "Ended",
    "FireTimer",
    "Op",
    "Outcome",
    "Output",
]

UNDECODED: Any = object()
"""Marks an outcome whose value has not been decoded for durable code yet."""


class Op:
    """One operation: what the code asked for at a position.

    The engine reads and writes the first block of fields; the driver attaches the
    rest (the future durable code awaits, the running task...) and the engine never
    looks at them.
    """

    # Set when a live run starts (the job's identity, for current_operation()).
    origin: Any

    __slots__ = (
        "abandoned",
        "annotation",
        "args",
        "attempts",
        "closed",
        "fut",
        "id",
        "inputs",
        "issued_at",
        "kind",
        "kwargs",
        "name",
        "origin",
        "sink",
        "spec",
        "start_logged",
        "state",
        "stopped",
        "streaming",
        "target",
        "task",
    )

    def __init__(
        self,
        kind: str,
        name: str,
        inputs: dict[str, JSONValue] | None = None,
        *,
        streaming: bool = False,
        spec: Any = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        # The engine's part.
        self.id: int = -1  # set by Engine.issue
        self.kind: str = kind  # "effect", "future", "input" or "patch"
        self.name: str = name
        self.inputs: dict[str, JSONValue] | None = inputs
        self.streaming: bool = streaming  # it may record values before its end
        self.start_logged: bool = False
        self.abandoned: bool = False  # the code stopped waiting: record no more
        # An effect's failed attempts its retry policy tried again, as recorded.
        self.attempts: list[OpAttempted] | None = None
        # The driver's part.
        self.fut: Any = None
        self.spec: Any = spec  # an effect's EffectSpec
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = kwargs if kwargs is not None else {}
        self.task: Any = None  # what runs it live (cancellable)
        self.stopped: bool = False  # the job cancelled its live run
        self.state: Any = None
        self.sink: Any = None
        self.annotation: Any = None
        self.target: Any = None
        self.closed: bool = False
        # A future's job clock when it was issued (set for futures only).
        self.issued_at: float

    def call(self) -> OperationCall:
        """What this operation asks for, as error data."""
        return OperationCall(self.kind, self.name, self.inputs)

    def describe(self) -> str:
        return describe_operation(self.kind, self.name, self.inputs)

    def __repr__(self) -> str:
        return f"<Op #{self.id} {self.describe()}>"


# -- what flows between engine and driver ------------------------------------------


@dataclass(slots=True, eq=False)
class Done:
    """An operation finished: its result or error. Recorded by a live run, or read
    from the log while replaying; ``t`` is the job clock of its entry."""

    op: Op
    result: JSONValue = None
    error: ErrorInfo | None = None
    t: float = 0.0
    # Live only: the exception itself, the value durable code gets (decoded as
    # replay would), and the host's acknowledgement once it is in the log.
    cause: BaseException | None = None
    decoded: Any = UNDECODED
    ack: Any = None
    recorded: bool | None = False  # None: stopped mid-write, unknown
    seq: int | None = None  # the job store inbox item it records, if any


@dataclass(slots=True, eq=False)
class Emitted:
    """An operation produced a value before its end (a streaming effect's action, a
    value sent to a host input)."""

    op: Op
    value: JSONValue
    t: float = 0.0
    decoded: Any = UNDECODED
    ack: Any = None
    recorded: bool | None = False  # None: stopped mid-write, unknown
    seq: int | None = None  # the job store inbox item it records, if any


@dataclass(slots=True, eq=False)
class Attempted:
    """An attempt of an effect failed and its retry policy tries it again: what
    the ``attempt`` entry records (live, the runner waits for ``ack``, set once
    it is in the log, before it waits for the next attempt)."""

    op: Op
    attempt: int
    error: ErrorInfo
    duration: float
    retry_at: float
    t: float = 0.0
    ack: Any = None
    recorded: bool | None = False  # None: stopped mid-write, unknown
    seq: None = None  # never an inbox item


@dataclass(slots=True, eq=False)
class Cancelled:
    """The host cancelled the job here (delivered to durable code as cancellation)."""

    t: float = 0.0
    ack: Any = None
    recorded: bool | None = False  # None: stopped mid-write, unknown
    seq: int | None = None  # the job store inbox item it records, if any


@dataclass(slots=True, eq=False)
class Output:
    """Durable code sent a value on a ``StreamWriter`` parameter (or closed it),
    to be recorded for readers in other processes (see ``OutputSent``)."""

    name: str
    value: JSONValue = None
    closed: bool = False
    error: ErrorInfo | None = None
    ack: Any = None
    recorded: bool | None = False
    seq: int | None = None


@dataclass(slots=True, eq=False)
class Ended:
    """The log records the job's end (while replaying)."""

    result: JSONValue
    error: ErrorInfo | None
    t: float
    next: JobStarted | None = None  # the job continued as new


@dataclass(slots=True, eq=False)
class FireTimer:
    """A durable timer falls due before the next entry: fire it first."""

    deadline: float


class _Signal:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_ENTRIES: Final[Any] = _Signal("NEED_ENTRIES")
"""The engine cannot answer before it has read more of the log."""
LOG_ENDED: Final[Any] = _Signal("LOG_ENDED")
"""Every recorded entry was delivered: the job goes live from here."""

Outcome = Done | Emitted | Attempted | Cancelled | Output
"""What a live write records, in the order it happened."""
