"""Duron's exceptions, split by who has to act.

* :class:`NonDeterminismError`, :class:`JobMismatchError`: the durable code and the
  log disagree; the user's code changed (or is not deterministic).
* :class:`CorruptLogError`: the stored bytes are damaged.
* :class:`StorageError`, :class:`LogLockedError`, :class:`LeaseLostError`: the storage
  backend failed or refused; :class:`StoreUnavailableError`: it cannot be reached
  right now (a failure that passes: never a reason to fail a job).
* :class:`PayloadError`: a value could not be encoded into, or decoded from, the log
  (:class:`PayloadTooLargeError`: it encodes past the log's size limit per entry).
* :class:`UsageError`: the API was used the wrong way.
* :class:`EffectError`: an effect raised an exception whose type cannot be rebuilt.
* :class:`InternalError`: a bug in Duron itself.

Every error keeps its facts as attributes and builds its message from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from duron._redact import redact

if TYPE_CHECKING:
    from duron._verify import VerifyReport

__all__ = [
    "CorruptLogError",
    "DivergenceKind",
    "DuplicateJobError",
    "DuronError",
    "EffectError",
    "IncompatibleLogError",
    "InternalError",
    "JobCancelledError",
    "JobMismatchError",
    "JobNotFoundError",
    "JobNotStartedError",
    "LeaseLostError",
    "LogLockedError",
    "NonDeterminismError",
    "NondeterministicCallError",
    "OperationCall",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PayloadTooLargeError",
    "SchemaError",
    "StorageError",
    "StoreUnavailableError",
    "UncheckableLogError",
    "UnknownFunctionError",
    "UsageError",
    "VerificationError",
]


class DuronError(Exception):
    """Base class of every error Duron raises itself."""


class UsageError(DuronError, TypeError):
    """The API was used in a way it does not support (raised early, with advice)."""


DivergenceKind = Literal[
    "other-operation",
    "not-reached",
    "position-finished",
    "unexpected-value",
    "early-end",
    "other-end",
    "no-job-entry",
]
"""How code and log differ, the ``kind`` of a :class:`NonDeterminismError`:

* ``other-operation``: the log recorded one operation at the position, the code asks
  for another (another effect, other inputs, another kind);
* ``not-reached``: the log recorded an operation at a position the code never
  reached (it ended, or waits for something else);
* ``position-finished``: the log records more for a position the code is done with
  (a second completion, or a completion of an operation the code dropped);
* ``unexpected-value``: the log recorded a streamed value for an operation that
  does not stream (an effect that is not an async generator, a future);
* ``early-end``: the log recorded the job's end while the code still waits;
* ``other-end``: both ended, with another result or error;
* ``no-job-entry``: the log does not begin with its job entry.
"""


class NondeterministicCallError(UsageError):
    """Durable code called something whose result differs on every run.

    Raised, under the determinism guard (``duron.testing.guard()``), at the call
    itself: the wall clock (``time.time()``, ``datetime.now()``), the global
    ``random`` generator, the system's random bytes (``os.urandom``,
    ``uuid.uuid4``, ``secrets``). A replay would see another value and could take
    another path.

    Attributes:
        call: The call refused (``"time.time()"``).
        where: Where durable code made it (``path:line``).
        reason: Why replay cannot have it.
        advice: What to use instead.
    """

    def __init__(self, *, call: str, where: str, reason: str, advice: str) -> None:
        self.call = call
        self.where = where
        self.reason = reason
        self.advice = advice
        super().__init__(f"durable code called {call} at {where}: {reason}; {advice}")


@dataclass(frozen=True, slots=True)
class OperationCall:
    """One operation as the log records it, or as the code asks for it.

    Attributes:
        kind: ``"effect"``, ``"future"``, ``"input"`` (a stream or signal
            parameter) or ``"patch"`` (a ``ctx.patched`` marker).
        name: The effect's recorded name, the future's name, the parameter's
            name or the patch's change id.
        inputs: The encoded inputs of an effect, by parameter name.
    """

    kind: str
    name: str
    inputs: dict[str, Any] | None = None

    def __str__(self) -> str:
        from duron._json import describe_operation

        return describe_operation(self.kind, self.name, self.inputs)


class NonDeterminismError(DuronError):
    """The durable code asked for something other than what the log recorded.

    Attributes:
        job: The job's label (a log path or a job id).
        position: The operation's position in the job (0 for its first operation).
        kind: How they differ (see :data:`DivergenceKind`).
        recorded: What the log recorded at that position, as shown, or ``None``.
        requested: What the code asks for now, as shown, or ``None`` for nothing.
        recorded_call: What the log recorded there, as data, when it is an
            operation.
        requested_calls: What the code asks for there, as data: one operation, or
            (for an ``early-end``) every operation it still waits for.
        offset: Where the recorded entry is in the log (byte offset or row), if known.
        hint: A few words on how the two sides relate, if any.
    """

    def __init__(
        self,
        *,
        job: str,
        position: int,
        kind: DivergenceKind,
        recorded: str | None,
        requested: str | None,
        recorded_call: OperationCall | None = None,
        requested_calls: Sequence[OperationCall] = (),
        offset: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.job = job
        self.position = position
        self.kind: DivergenceKind = kind
        self.recorded = recorded
        self.requested = requested
        self.recorded_call = recorded_call
        self.requested_calls: tuple[OperationCall, ...] = tuple(requested_calls)
        self.offset = offset
        self.hint = hint
        where = f"position {position}"
        if offset is not None:
            where += f" (log offset {offset})"
        rec = recorded if recorded is not None else "nothing"
        req = requested if requested is not None else "nothing"
        msg = (
            f"job {job}: at {where} the log recorded {rec} but the code now asks "
            f"for {req}"
        )
        msg += f"; {hint}" if hint else ""
        msg += (
            ". The durable function no longer replays this log: restore the old "
            "code path (ctx.patched can carry both) or start a new job"
        )
        super().__init__(msg)


class JobMismatchError(DuronError):
    """The log belongs to another job: other durable function or other arguments.

    Attributes:
        job: The job's label.
        field: What differs (``"function"`` or ``"arguments"``).
        recorded: What the log recorded.
        requested: What the caller asked for.
    """

    def __init__(self, *, job: str, field: str, recorded: str, requested: str) -> None:
        self.job = job
        self.field = field
        self.recorded = recorded
        self.requested = requested
        if field == "function":
            msg = (
                f"job {job}: the log was written by durable function {recorded}, "
                f"not {requested}; open the log with the function that wrote it"
            )
        else:
            msg = (
                f"job {job}: the log was started with {recorded} but start() was "
                f"called with {requested}; use resume() to continue the logged job, "
                "or a new log for new arguments"
            )
        super().__init__(msg)


class JobCancelledError(DuronError):
    """The job was cancelled (``job.cancel()``) and its durable code let it end there."""


class JobNotStartedError(DuronError):
    """``resume()`` was called on a log that holds no job."""

    def __init__(self, *, job: str) -> None:
        self.job = job
        super().__init__(
            f"job {job}: resume() found an empty log; call start(...) to begin the job"
        )


class CorruptLogError(DuronError):
    """The stored log is damaged (not a crash's torn tail, which is repaired).

    Attributes:
        job: The job's label (for a file: its path).
        offset: Byte offset (file) or row number (SQL) of the damaged entry.
        reason: What is wrong with it.
        advice: What to do about it, when it is not the default (restore or
            truncate), e.g. a log written in a newer format needs a newer Duron.
    """

    def __init__(
        self, *, job: str, offset: int, reason: str, advice: str | None = None
    ) -> None:
        self.job = job
        self.offset = offset
        self.reason = reason
        self.advice = advice
        state = "cannot be read"
        if advice is None:
            state = "is damaged"
            advice = (
                "Duron does not skip damaged entries; restore the log from a backup "
                "or truncate it before this offset to re-run from there"
            )
        super().__init__(f"log {job} {state} at offset {offset}: {reason}. {advice}")


class StorageError(DuronError):
    """The storage backend failed or refused an operation.

    :class:`StoreUnavailableError` (a subclass) means the failure may pass: the
    store cannot be reached right now. Any other ``StorageError`` is a refusal.

    Attributes:
        store: The log or store concerned: a file path, a job's label, or a
            database URL without its password.
        operation: What failed: ``"append"``, ``"read"``, ``"acquire"``,
            ``"release"``, ``"claim"``, ``"heartbeat"``, ``"connect"``, ...
        detail: The backend's explanation (the driver's own error message).
        job: The job the operation was for, when there is one.
        kind: How the message names ``store`` (``"log"``, ``"SQLite store"``...).

    The driver's exception, when there is one, is the ``__cause__``. The message
    never shows a password: a connection string in it is shown without one.
    """

    def __init__(
        self,
        *,
        store: str,
        operation: str,
        detail: str,
        job: str | None = None,
        kind: str = "store",
    ) -> None:
        # The driver's words may quote the connection string it was given.
        self.store: str = redact(store)
        self.operation: str = operation
        self.detail: str = redact(detail)
        self.job = job
        self.kind = kind
        super().__init__(self._message())

    def _what(self) -> str:
        of = f" of job {self.job}" if self.job is not None else ""
        return f"{self.operation}{of} failed: {self.detail}"

    def _message(self) -> str:
        return f"{self.kind} {self.store}: {self._what()}"


class StoreUnavailableError(StorageError):
    """The store cannot be reached right now; try again later.

    The server is down or restarting, the network is cut, the database is locked
    beyond its busy timeout, the disk is full or the file read-only: nothing was
    refused for good. A :class:`~duron.Worker` never marks a job failed for it: it
    stops the job at a safe point without recording anything and resumes it once
    the store answers again, replaying what was committed.
    """

    def _message(self) -> str:
        return (
            f"{self.kind} {self.store} is unavailable right now: {self._what()}; "
            "try again once it is back"
        )


class LogLockedError(StorageError):
    """Another writer holds the log.

    Attributes:
        job: The job's label.
        holder: Who holds it, when the backend knows.
    """

    def __init__(self, *, job: str, holder: str | None = None) -> None:
        self.holder = holder
        by = f" (held by {holder})" if holder else ""
        self._text = (
            f"log {job} is already open for writing by another job{by}; a log has "
            "one writer at a time: close the other job or wait for it to finish"
        )
        super().__init__(
            store=job,
            operation="acquire",
            detail=f"held by another writer{by}",
            job=job,
            kind="log",
        )

    def _message(self) -> str:
        return self._text


class LeaseLostError(StorageError):
    """This writer lost its lease on the log; another owner continues the job."""

    def __init__(self, *, job: str, detail: str) -> None:
        super().__init__(
            store=job, operation="append", detail=detail, job=job, kind="log"
        )

    def _message(self) -> str:
        return f"job {self.job}: lease lost, nothing was written: {self.detail}"


class SchemaError(StorageError):
    """The store's database is not a Duron store, or its schema is not one we can use.

    Attributes:
        store: The store (a file path, a database URL without its password).
        detail: What is wrong and what to do about it.
    """

    def __init__(self, *, store: str, detail: str) -> None:
        super().__init__(store=store, operation="open", detail=detail)

    def _message(self) -> str:
        return f"{self.store}: {self.detail}"


class JobNotFoundError(DuronError, LookupError):
    """The store holds no job with this id.

    Attributes:
        job: The job id asked for.
        store: The store that was searched (a path, or a URL without its
            password).
    """

    def __init__(self, *, job: str, store: str) -> None:
        self.job = job
        self.store: str = redact(store)
        super().__init__(
            f"no job {job!r} in {self.store}; list the store's jobs with "
            "store.list_jobs() or `duron jobs list`"
        )


class DuplicateJobError(DuronError):
    """``submit()`` reused a job id that names a different call.

    Arguments are compared as the durable function reads them (decoded into their
    annotated types), so ``Decimal("12.50")`` and ``Decimal("12.5")`` are the same
    call; an argument left out is its parameter's default.

    Attributes:
        job: The job id.
        recorded: The call the store holds under that id.
        requested: The call ``submit()`` was given.
        argument: The first argument (in the function's parameter order) that
            differs, or ``None`` when the function differs (or the id names a log
            that holds no job).
        recorded_value: That argument as the store holds it (JSON, cut around the
            first difference when long).
        requested_value: That argument as ``submit()`` was given it (the same way).
    """

    def __init__(
        self,
        *,
        job: str,
        recorded: str,
        requested: str,
        argument: str | None = None,
        recorded_value: str | None = None,
        requested_value: str | None = None,
    ) -> None:
        self.job = job
        self.recorded = recorded
        self.requested = requested
        self.argument = argument
        self.recorded_value = recorded_value
        self.requested_value = requested_value
        differs = ""
        if argument is not None:
            differs = (
                f": argument {argument!r} differs (recorded {recorded_value}, "
                f"requested {requested_value})"
            )
        super().__init__(
            f"job {job} was already submitted as {recorded}, not {requested}"
            f"{differs}; a job id names one call: submit the same arguments to get "
            "the same job, or submit under another id (fn.options(job_id=...))"
        )


class UnknownFunctionError(DuronError):
    """A worker claimed a job whose durable function it was not given.

    Attributes:
        job: The job id.
        function: The durable function the job's log names.
        known: The functions the worker runs.
    """

    def __init__(self, *, job: str, function: str, known: tuple[str, ...]) -> None:
        self.job = job
        self.function = function
        self.known = known
        names = ", ".join(known) if known else "none"
        super().__init__(
            f"job {job}: durable function {function} is not registered with this "
            f"worker (it runs: {names}); pass it to duron.Worker(store, [...]) and "
            "requeue the job with store.requeue() or `duron jobs resume`"
        )


class PayloadError(DuronError):
    """A value could not go into the log, or a logged value no longer decodes.

    Catch this to handle both; the two subclasses say who must act:
    :class:`PayloadEncodeError` (a value the code produced cannot be recorded:
    fix the code) and :class:`PayloadDecodeError` (a value the log holds no longer
    validates as today's type: a schema change).

    Attributes:
        what: Which payload (``"result of work"``, ``"argument 'name' of work"``).
        type_name: The annotated type (or the value's type when unannotated).
        detail: The codec's explanation (for pydantic, its validation message).
        position: The operation's position, when the payload belongs to one.
        job: The job's label, when known.
    """

    def __init__(
        self,
        *,
        what: str,
        type_name: str,
        detail: str,
        position: int | None = None,
        job: str | None = None,
    ) -> None:
        self.what = what
        self.type_name = type_name
        self.detail = detail
        self.position = position
        self.job = job
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.job is not None:
            where += f"job {self.job}: "
        if self.position is not None:
            where += f"position {self.position}: "
        return f"{where}{self.what} ({self.type_name}): {self.detail}"

    def at(self, *, job: str | None, position: int | None = None) -> PayloadError:
        """The same error, placed in a job (and at a position), its cause kept."""
        err = type(self)(
            what=self.what,
            type_name=self.type_name,
            detail=self.detail,
            position=position if position is not None else self.position,
            job=job,
        )
        err.__cause__ = self.__cause__
        return err


class PayloadEncodeError(PayloadError):
    """A value the code produced cannot be written to the log as its annotated type.

    An argument, an effect's result or raised exception, a value sent to a job: it
    does not encode, or what it encodes to would not decode back into the annotated
    type (so that a replay could not rebuild it). Nothing was written. Fix the
    value or the annotation.
    """


class PayloadTooLargeError(PayloadEncodeError):
    """A value encodes to a log entry larger than the log allows.

    The limit is the storage's ``limits.max_entry_size`` (see
    :class:`~duron.LogLimits`). Nothing was written; like any value that cannot be
    recorded it is final: the same value would be refused again, so no retry
    policy retries it. Keep large data outside the log (a file, a bucket, a row)
    and record a reference to it, or raise the limit.

    Attributes:
        size: The entry's size, encoded, in bytes.
        limit: The largest entry the log takes, in bytes.
    """

    def __init__(
        self,
        *,
        what: str,
        size: int,
        limit: int,
        type_name: str = "log entry",
        position: int | None = None,
        job: str | None = None,
    ) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            what=what,
            type_name=type_name,
            detail=(
                f"{size:,} bytes encoded, over the limit of {limit:,} bytes per "
                "log entry; keep large data outside the log and record a "
                "reference to it, or raise the storage's limits.max_entry_size"
            ),
            position=position,
            job=job,
        )

    def at(self, *, job: str | None, position: int | None = None) -> PayloadError:
        """The same error, placed in a job (and at a position), its cause kept."""
        err = PayloadTooLargeError(
            what=self.what,
            size=self.size,
            limit=self.limit,
            type_name=self.type_name,
            position=position if position is not None else self.position,
            job=job,
        )
        err.__cause__ = self.__cause__
        return err


class PayloadDecodeError(PayloadError):
    """A value the log holds no longer validates as today's annotated type.

    The log was written under other types (a model lost a field, a field changed
    type). Nothing was run. Make the type accept the old form (a default, a
    validator), or keep the job on the old code.
    """

    def _message(self) -> str:
        return (
            f"{super()._message()}. The log was written under other types: make "
            "the type accept what it recorded (a default, a validator) or keep "
            "this job on the code that wrote it"
        )


class EffectError(DuronError):
    """An effect failed with an exception that cannot be rebuilt as its own type.

    Durable code receives the effect's own exception type whenever it can be
    imported and built from its recorded arguments; otherwise this error, which
    names the original type.

    Attributes:
        type_name: The original exception's qualified type name.
        message: ``str()`` of the original exception.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[type[EffectError], tuple[str, str]]:
        return (type(self), (self.type_name, self.message))


class InternalError(DuronError):
    """A bug in Duron: please report it with the log that triggered it."""


class VerificationError(DuronError):
    """``duron.testing.verify`` found logs that today's code cannot be shown to replay.

    Attributes:
        reports: The reports of the logs that are not ok, in the order checked.
        report: The first of them.
    """

    def __init__(self, reports: Sequence[VerifyReport]) -> None:
        if not reports:
            raise ValueError("a VerificationError needs at least one report")
        self.reports: tuple[VerifyReport, ...] = tuple(reports)
        self.report: VerifyReport = self.reports[0]
        blocks = []
        for r in self.reports:
            what = (
                "no longer replays this log"
                if r.status == "incompatible"
                else "cannot be checked against this log"
            )
            lines = [f"{r.log}: durable function {r.function} {what}"]
            lines += [f"  {line}" for line in r.detail.split("\n") if line]
            blocks.append("\n".join(lines))
        super().__init__("\n".join(blocks))


class IncompatibleLogError(VerificationError):
    """Today's code takes another path than a log, or cannot read a recorded payload.

    Raised by ``duron.testing.verify`` when at least one log is incompatible; each
    report says where and how (position, what the log recorded, what the code asks
    for, or pydantic's explanation).
    """


class UncheckableLogError(VerificationError):
    """A log could not be checked: damaged, empty, unreadable, or another function's.

    Raised by ``duron.testing.verify`` when no log is incompatible but some could
    not be checked.
    """
