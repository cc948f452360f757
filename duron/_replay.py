"""The replay core: a pure state machine, no I/O, no event loop, no clock.

It is fed two streams and keeps them consistent:

* the operations the durable code issues (:meth:`Replayer.issue`), numbered 0, 1, 2...
  in the order the deterministic loop issues them;
* the entries read from the log (:meth:`Replayer.feed`), in log order.

For each entry it answers what the driver must do (deliver a recorded result, a
recorded emission, the recorded end) or raises :class:`~duron.NonDeterminismError`
when the entry does not match what the code asked for at that position. When the log
is exhausted, :meth:`Replayer.end_of_log` names the operations to run live.

The ordering rule that makes this possible: a live driver writes an operation's
``start``/``done`` entry only after the code issued it, so when replay reads an entry
for position *k*, the code has already issued *k* (or never will: a divergence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from duron._entries import (
    Entry,
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpCompleted,
    OpEmitted,
    OpStarted,
)
from duron._errors import CorruptLogError, NonDeterminismError
from duron._json import JSONValue, format_call

__all__ = ["Cancel", "Deliver", "Emit", "Finish", "OpRecord", "Replayer"]


@dataclass(slots=True)
class OpRecord:
    """What the code asked for at one position."""

    id: int
    kind: str
    name: str
    inputs: dict[str, JSONValue] | None
    start_logged: bool = False

    def describe(self) -> str:
        return _describe(self.kind, self.name, self.inputs)


@dataclass(slots=True)
class Deliver:
    """Hand the recorded outcome of operation ``op`` to the code."""

    op: OpRecord
    result: JSONValue
    error: ErrorInfo | None


@dataclass(slots=True)
class Emit:
    """Hand one recorded value of operation ``op`` (a stream item) to the code."""

    op: OpRecord
    value: JSONValue


@dataclass(slots=True)
class Finish:
    """The log records the job's end."""

    result: JSONValue
    error: ErrorInfo | None


@dataclass(slots=True)
class Cancel:
    """The log records that the host cancelled the job here."""


def _describe(kind: str, name: str, inputs: dict[str, Any] | None) -> str:
    if kind == "effect":
        return format_call(name, inputs)
    if inputs is None:
        return f"{kind} {name}"
    return f"{kind} {format_call(name, inputs)}"


class Replayer:
    """Matches issued operations against recorded entries.

    Args:
        job: Label used in error messages.
        replaying: False for a new job (nothing to replay).
        same_inputs: Asked, when an entry names the same operation as the code
            but its recorded inputs differ as stored, whether they still mean the
            same call (the driver re-reads them through today's annotations, so a
            model field added with a default is no divergence). Without it, inputs
            must be equal.
    """

    __slots__ = (
        "_pending",
        "finished",
        "job",
        "next_id",
        "replaying",
        "same_inputs",
    )

    def __init__(
        self,
        job: str,
        *,
        replaying: bool = True,
        same_inputs: Callable[[OpRecord, dict[str, JSONValue] | None], bool]
        | None = None,
    ) -> None:
        self.job: str = job
        self.next_id: int = 0
        self.replaying: bool = replaying
        self.finished: bool = False
        self.same_inputs: (
            Callable[[OpRecord, dict[str, JSONValue] | None], bool] | None
        ) = same_inputs
        self._pending: dict[int, OpRecord] = {}

    @property
    def pending(self) -> dict[int, OpRecord]:
        """Issued operations that have no recorded outcome yet."""
        return self._pending

    def issue(
        self, kind: str, name: str, inputs: dict[str, JSONValue] | None
    ) -> OpRecord:
        """Register an operation the code asks for; returns it with its position."""
        op = OpRecord(self.next_id, kind, name, inputs)
        self.next_id += 1
        self._pending[op.id] = op
        return op

    def take(
        self,
        kind: str,
        name: str,
        inputs: dict[str, JSONValue] | None,
        start: OpStarted | None,
        done: OpCompleted,
    ) -> bool:
        """Issue an operation and consume its recorded ``start``/``done`` at once.

        For the replay shortcut: when the log's next entries are exactly this
        operation's, nothing is left pending. Returns False (changing nothing) if
        they are not, and the normal :meth:`issue`/:meth:`feed` path then reports
        whatever is wrong.
        """
        position = self.next_id
        if done.id != position or self.finished:
            return False
        named = done
        if start is not None:
            if start.id != position or done.name is not None:
                return False
            named = start  # type: ignore[assignment]
        if named.name != name or named.kind != kind or named.inputs != inputs:
            return False
        self.next_id = position + 1
        return True

    def forget(self, op_id: int) -> None:
        """The code no longer waits for ``op_id`` (it completed live, or was dropped)."""
        self._pending.pop(op_id, None)

    def feed(
        self, entry: Entry, offset: int
    ) -> Deliver | Emit | Finish | Cancel | None:
        """Consume one recorded entry; returns what to deliver, if anything.

        Args:
            entry: The next entry of the log (after its job entry).
            offset: Where the entry is stored (byte offset or row), for errors.

        Raises:
            NonDeterminismError: The entry does not match what the code asked for.
            CorruptLogError: The entries contradict each other (a second job entry,
                an entry after the job's end, a completion without its start).
        """
        if self.finished:
            raise CorruptLogError(
                job=self.job,
                offset=offset,
                reason=f"an entry of type {entry.type!r} after the job's end entry",
            )
        match entry:
            case OpCompleted():
                op = self._match(entry.id, entry.kind, entry.name, entry.inputs, offset)
                if entry.name is None and not op.start_logged:
                    # Without a name the entry relies on an earlier start entry to
                    # say what it completes; delivering it unchecked could hand a
                    # result to another call.
                    raise CorruptLogError(
                        job=self.job,
                        offset=offset,
                        reason=(
                            f"operation #{op.id} completes here but the log holds "
                            "no start entry naming it"
                        ),
                    )
                del self._pending[op.id]
                return Deliver(op, entry.result, entry.error)
            case OpEmitted():
                op = self._match(entry.id, None, None, None, offset)
                return Emit(op, entry.value)
            case OpStarted():
                op = self._match(entry.id, entry.kind, entry.name, entry.inputs, offset)
                op.start_logged = True
                return None
            case JobCancelled():
                return Cancel()
            case JobFinished():
                self.finished = True
                return Finish(entry.result, entry.error)
            case JobStarted():
                raise CorruptLogError(
                    job=self.job,
                    offset=offset,
                    reason="a second job entry (a log holds exactly one job)",
                )

    def _match(
        self,
        op_id: int,
        kind: str | None,
        name: str | None,
        inputs: dict[str, JSONValue] | None,
        offset: int,
    ) -> OpRecord:
        op = self._pending.get(op_id)
        if op is None:
            recorded = (
                _describe(kind, name, inputs)
                if kind and name
                else f"operation #{op_id}"
            )
            if op_id < self.next_id:
                hint = "the code already finished with that position"
                requested = "nothing more for it"
            else:
                hint = "the code did not reach that operation"
                requested = None
            raise NonDeterminismError(
                job=self.job,
                position=op_id,
                recorded=recorded,
                requested=requested,
                offset=offset,
                hint=hint,
            )
        if name is not None and (
            op.name != name
            or op.kind != kind
            or (op.inputs != inputs and not self._same_inputs(op, inputs))
        ):
            raise NonDeterminismError(
                job=self.job,
                position=op_id,
                recorded=_describe(kind or op.kind, name, inputs),
                requested=op.describe(),
                offset=offset,
            )
        return op

    def _same_inputs(self, op: OpRecord, inputs: dict[str, JSONValue] | None) -> bool:
        check = self.same_inputs
        return check is not None and check(op, inputs)

    def end_of_log(self) -> list[OpRecord]:
        """Switch to live; returns the issued operations that must now run live."""
        self.replaying = False
        return list(self._pending.values())
