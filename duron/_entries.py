"""Log entries as records: what each kind holds and its JSON-ready form.

One entry is one JSON object (one line in a file log). Kinds, by their ``type`` tag:

* ``job``: first entry: format version, durable function, encoded arguments, seed.
* ``start``: an operation began (written when it is still running at a flush).
* ``done``: an operation finished, with its encoded result or error. When no
  ``start`` entry was written for it, it carries the operation's name and inputs.
* ``emit``: a streaming effect produced a value (or a host input arrived).
* ``cancel``: the host cancelled the job (delivered to the code at that point).
* ``end``: the job returned or raised.

Every entry but ``job`` carries ``t``, the job's clock (seconds since the epoch) when
it was recorded: replay takes time from here, never from the host.

Records are slotted dataclasses, not frozen ones: a frozen dataclass's ``__init__``
pays ~0.3 µs per field and replay builds one record per entry. Treat them as
immutable all the same.

The records import no serializer (the replay core uses them and must stay free of
I/O); turning them into bytes and back is :mod:`duron._log`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from duron._json import JSONValue

__all__ = [
    "FORMAT_VERSION",
    "Entry",
    "ErrorInfo",
    "JobCancelled",
    "JobFinished",
    "JobStarted",
    "OpCompleted",
    "OpEmitted",
    "OpStarted",
]

FORMAT_VERSION = 1


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
        args = d.get("args")
        return cls(
            str(d["type"]), str(d["message"]), args if isinstance(args, list) else None
        )


@dataclass(slots=True)
class JobStarted:
    fn: str
    args: dict[str, JSONValue]
    seed: str
    t: float
    module: str = ""
    version: int = FORMAT_VERSION
    type: Literal["job"] = "job"

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "type": "job",
            "version": self.version,
            "fn": self.fn,
            "module": self.module,
            "args": self.args,
            "seed": self.seed,
            "t": self.t,
        }


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
        return d


@dataclass(slots=True)
class OpEmitted:
    id: int
    t: float
    value: JSONValue
    type: Literal["emit"] = "emit"

    def to_json(self) -> dict[str, JSONValue]:
        return {"type": "emit", "id": self.id, "t": self.t, "value": self.value}


@dataclass(slots=True)
class JobFinished:
    t: float
    result: JSONValue = None
    error: ErrorInfo | None = None
    type: Literal["end"] = "end"

    def to_json(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {"type": "end", "t": self.t}
        if self.error is not None:
            d["error"] = self.error.to_json()
        else:
            d["result"] = self.result
        return d


@dataclass(slots=True)
class JobCancelled:
    """The host asked for the job to be cancelled (delivered as cancellation)."""

    t: float
    type: Literal["cancel"] = "cancel"

    def to_json(self) -> dict[str, JSONValue]:
        return {"type": "cancel", "t": self.t}


Entry = Union[  # noqa: UP007
    JobStarted, OpStarted, OpCompleted, OpEmitted, JobCancelled, JobFinished
]
