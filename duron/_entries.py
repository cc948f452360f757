"""Log entries as records: what each kind holds and its JSON-ready form.

One entry is one JSON object (one line in a file log). Kinds, by their ``type`` tag:

* ``job``: first entry: format version, durable function, encoded arguments, seed,
  and (optional) ``context``: what travels with the job from where it was created
  (a trace context...), an object written only when there is something to carry;
  ``run`` (optional, >= 1): which run of a job that continued as new this log
  holds (absent: the first).
* ``start``: an operation began (written when it is still running at a flush).
* ``done``: an operation finished, with its encoded result or error. When no
  ``start`` entry was written for it, it carries the operation's name and inputs.
* ``emit``: a streaming effect produced a value (or a host input arrived).
* ``attempt``: an attempt of an effect failed and its retry policy tries it again:
  the attempt's number, error and duration, and when the next one is due.
* ``cancel``: the host cancelled the job (delivered to the code at that point).

A ``done``, ``emit`` or ``cancel`` entry that records an item of a job store's inbox
(input sent through the store, from any process) carries ``seq``, the item's
number in the job's inbox: a resumed run knows from it which items its log already
holds, so that none is recorded twice. Entries of input sent through ``Job`` have
no ``seq``; logs written before it existed read the same.
* ``end``: the job returned or raised; or, with ``next`` (and no ``result``), it
  continued as new: ``next`` is the job entry of the job's next run, whose log
  replaces this one (see :mod:`duron._chain`). A reader that predates it refuses
  the entry (an end holds a result or an error) rather than reporting the job as
  completed.
* ``out``: durable code sent a value on a ``StreamWriter`` parameter (or closed
  it), recorded so that other processes can read the job's output from its log
  (written by storages that keep output: a job store's logs). Replay produces the
  values again; it only counts these entries, so that none is recorded twice.

Every entry but ``job`` carries ``t``, the job's clock (seconds since the epoch) when
it was recorded: replay takes time from here, never from the host.

Records are slotted dataclasses, not frozen ones: a frozen dataclass's ``__init__``
pays ~0.3 µs per field and replay builds one record per entry. Treat them as
immutable all the same.

The records import no serializer (the replay core uses them and must stay free of
I/O); turning them into bytes and back is :mod:`duron._log`'s job, and so is checking
every field of an entry read back (:class:`InvalidField` is how a field says what is
wrong with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from duron._json import JSONValue

__all__ = [
    "FORMAT_VERSION",
    "Entry",
    "ErrorInfo",
    "InvalidField",
    "JobCancelled",
    "JobFinished",
    "JobStarted",
    "OpAttempted",
    "OpCompleted",
    "OpEmitted",
    "OpStarted",
    "OutputSent",
    "json_type",
]

FORMAT_VERSION = 1


class InvalidField(ValueError):
    """A stored field holds something Duron never writes there.

    Readers turn it into :class:`~duron.CorruptLogError` (for a log entry) or
    another Duron error naming where the field was read.

    Attributes:
        path: The field's name, dotted from the record it was read from
            (``"error.type"``); empty for the record itself.
        problem: What is wrong: ``"is missing"``, ``"must be a string, not null"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"field {path!r} {problem}" if path else problem)

    def within(self, outer: str) -> InvalidField:
        """The same problem, named from the record that holds ``outer``."""
        return InvalidField(
            f"{outer}.{self.path}" if self.path else outer, self.problem
        )


def json_type(value: object) -> str:
    """The JSON type of a decoded value, as a message names it (``"a list"``)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "a boolean"
    kind = type(value)
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if kind is list:
        return "a list"
    if kind is dict:
        return "an object"
    return f"a {kind.__qualname__}"  # not from JSON: a caller's own value


def _scalar(value: object) -> bool:
    # isinstance, not type(): the driver also reads back errors it recorded itself,
    # whose args may still be str or int subclasses (an IntEnum) before encoding.
    return value is None or isinstance(value, (str, int, float))


@dataclass(slots=True)
class ErrorInfo:
    """An exception as recorded: its qualified type, ``str()`` and JSON-native args."""

    type: str
    message: str
    args: list[JSONValue] | None = None

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {"type": self.type, "message": self.message}
        if self.args is not None:
            d["args"] = self.args
        return d

    @classmethod
    def from_json(cls, d: Any) -> ErrorInfo:
        """The error :meth:`to_json` wrote.

        Raises:
            InvalidField: ``d`` is not such an object: ``type`` and ``message``
                strings, ``args`` (if present) a list of JSON scalars, the only
                arguments an error is recorded with.
        """
        if type(d) is not dict:
            raise InvalidField("", f"must be an object, not {json_type(d)}")
        kind = d.get("type")
        message = d.get("message")
        args = d.get("args")
        if isinstance(kind, str) and isinstance(message, str):
            if args is None and "args" not in d:
                return cls(kind, message)
            if type(args) is list and all(_scalar(a) for a in args):
                return cls(kind, message, args)
        for name in ("type", "message"):
            if name not in d:
                raise InvalidField(name, "is missing")
            if not isinstance(d[name], str):
                raise InvalidField(name, f"must be a string, not {json_type(d[name])}")
        if type(args) is not list:
            raise InvalidField("args", f"must be a list, not {json_type(args)}")
        i = next(i for i, a in enumerate(args) if not _scalar(a))
        raise InvalidField(
            "args",
            "must hold only strings, numbers, booleans and nulls "
            f"(item {i} is {json_type(args[i])})",
        )


@dataclass(slots=True)
class JobStarted:
    fn: str
    args: dict[str, JSONValue]
    seed: str
    t: float
    module: str = ""
    version: int = FORMAT_VERSION
    context: dict[str, JSONValue] | None = None
    # When the job is cancelled if it has not ended (seconds since the epoch).
    deadline: float | None = None
    # Which run of a job that continued as new (0: the first; written when > 0).
    run: int = 0
    type: Literal["job"] = "job"

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {
            "type": "job",
            "version": self.version,
            "fn": self.fn,
            "module": self.module,
            "args": self.args,
            "seed": self.seed,
            "t": self.t,
        }
        if self.context is not None:
            d["context"] = self.context
        if self.deadline is not None:
            d["deadline"] = self.deadline
        if self.run:
            d["run"] = self.run
        return d


@dataclass(slots=True)
class OpStarted:
    id: int
    t: float
    kind: str
    name: str
    inputs: dict[str, JSONValue] | None
    type: Literal["start"] = "start"

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {
            "type": "start",
            "id": self.id,
            "t": self.t,
            "kind": self.kind,
            "name": self.name,
        }
        if self.inputs is not None:
            d["inputs"] = self.inputs
        return d


@dataclass(slots=True)
class OpCompleted:
    id: int
    t: float
    result: JSONValue = None
    error: ErrorInfo | None = None
    # Present when no ``start`` entry was written for this operation.
    kind: str | None = None
    name: str | None = None
    inputs: dict[str, JSONValue] | None = None
    type: Literal["done"] = "done"
    seq: int | None = None  # the inbox item it records, if any

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {"type": "done", "id": self.id, "t": self.t}
        if self.name is not None:
            d["kind"] = self.kind
            d["name"] = self.name
            if self.inputs is not None:
                d["inputs"] = self.inputs
        if self.error is not None:
            d["error"] = self.error.to_json()
        else:
            d["result"] = self.result
        if self.seq is not None:
            d["seq"] = self.seq
        return d


@dataclass(slots=True)
class OpEmitted:
    id: int
    t: float
    value: JSONValue
    type: Literal["emit"] = "emit"
    seq: int | None = None  # the inbox item it records, if any

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {
            "type": "emit",
            "id": self.id,
            "t": self.t,
            "value": self.value,
        }
        if self.seq is not None:
            d["seq"] = self.seq
        return d


@dataclass(slots=True)
class OpAttempted:
    """Attempt number ``attempt`` of an effect failed with ``error`` after
    ``duration`` seconds; the next attempt is due at ``retry_at`` (job clock)."""

    id: int
    t: float
    attempt: int
    error: ErrorInfo
    duration: float
    retry_at: float
    type: Literal["attempt"] = "attempt"

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "type": "attempt",
            "id": self.id,
            "t": self.t,
            "attempt": self.attempt,
            "error": self.error.to_json(),
            "duration": self.duration,
            "retry_at": self.retry_at,
        }


@dataclass(slots=True)
class JobFinished:
    t: float
    result: JSONValue = None
    error: ErrorInfo | None = None
    # The job continued as new: the job entry of its next run (no result, no error).
    next: JobStarted | None = None
    type: Literal["end"] = "end"

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {"type": "end", "t": self.t}
        if self.next is not None:
            d["next"] = self.next.to_json()
        elif self.error is not None:
            d["error"] = self.error.to_json()
        else:
            d["result"] = self.result
        return d


@dataclass(slots=True)
class JobCancelled:
    """The host asked for the job to be cancelled (delivered as cancellation)."""

    t: float
    type: Literal["cancel"] = "cancel"
    seq: int | None = None  # the inbox item it records, if any

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {"type": "cancel", "t": self.t}
        if self.seq is not None:
            d["seq"] = self.seq
        return d


@dataclass(slots=True)
class OutputSent:
    """Durable code sent ``value`` on its ``StreamWriter`` parameter ``name``, or
    closed it (``closed``, with the ``error`` it was closed with, if any)."""

    name: str
    t: float
    value: JSONValue = None
    closed: bool = False
    error: ErrorInfo | None = None
    type: Literal["out"] = "out"

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {"type": "out", "t": self.t, "name": self.name}
        if self.closed:
            d["closed"] = True
            if self.error is not None:
                d["error"] = self.error.to_json()
        else:
            d["value"] = self.value
        return d


Entry = Union[  # noqa: UP007
    JobStarted,
    OpStarted,
    OpCompleted,
    OpEmitted,
    OpAttempted,
    JobCancelled,
    JobFinished,
    OutputSent,
]
