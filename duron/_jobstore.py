"""Job stores: many jobs in one database, and what a :class:`~duron.Worker` needs.

A job store keeps many job logs (each one a :class:`~duron.LogStorage`, from
``store.log(job_id)``) plus a table of jobs: which durable function, which
arguments, the status, the result or error, and who holds the job's lease. The
SQLite store (one machine) and the PostgreSQL store (many machines) implement the
same :class:`JobStore` protocol, so one :class:`~duron.Worker` runs either.

This module holds the protocol, the records it returns and the store-independent
logic every backend shares (encoding a submitted call, cutting a log for a fork,
reading a job's outcome from its end entry).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

import orjson

from duron._codec import decode_recorded
from duron._entries import InvalidField, json_type
from duron._errors import (
    JobCancelledError,
    StorageError,
    UsageError,
)
from duron._json import JSONValue, format_call
from duron._limits import DEFAULT_MAX_ENTRY_SIZE
from duron._log import (
    MAX_DEPTH,
    T_MAX,
    T_MIN,
    ErrorInfo,
    JobFinished,
    JobStarted,
    OutputSent,
    decode_entry,
)
from duron._options import JOB_ID_RULE, CallOptions, is_job_id
from duron._recorded_errors import rebuild

if TYPE_CHECKING:
    from duron._durable import DurableFn
    from duron._job_query import FunctionActivity, JobList
    from duron._storage import LogStorage
    from duron._store_streams import StoreReader, StoreWriter

__all__ = [
    "TERMINAL",
    "Claim",
    "Heartbeat",
    "JobInfo",
    "JobStatus",
    "JobStore",
    "Submission",
    "end_outcome",
    "fork_prefix",
    "job_info_from_row",
    "new_job_id",
    "outcome_of",
    "parse_job_entry",
    "submission",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_log = logging.getLogger("duron")

JobStatus = Literal[
    "pending", "running", "suspended", "completed", "failed", "cancelled"
]
"""Where a job is in its life:

* ``pending``: submitted (or stopped at a safe point, or requeued) and waiting for a
  worker that has its durable function;
* ``running``: a worker or a ``store.log()`` writer holds its lease (after a crash
  the lease expires and another worker takes the job over);
* ``suspended``: its durable code waits on durable things only (a timer, a future,
  a stream or signal, a child job) and it holds no worker: it is pending again when
  input or a cancel request arrives for it, or, at :attr:`JobInfo.wake_at`, its
  timer is due;
* ``completed``, ``failed``, ``cancelled``: it ended; ``failed`` also covers a job a
  worker could not run (a log the code no longer replays), which
  ``store.requeue()`` makes runnable again.
"""

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
STATUSES: tuple[JobStatus, ...] = (
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
)

_CANCELLED_TYPES = frozenset(
    {
        f"{JobCancelledError.__module__}.{JobCancelledError.__qualname__}",
        "asyncio.exceptions.CancelledError",
    }
)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job as the store's job table records it (a snapshot).

    Attributes:
        id: The job id.
        function: The durable function's recorded name (``None`` for a log opened
            with ``store.log()`` that has no job entry yet).
        status: See :data:`JobStatus`.
        args: The encoded arguments, as the job entry records them.
        result: The encoded result of a completed job.
        error: The recorded error of a failed or cancelled job.
        created: When the job was submitted (or its log first opened).
        updated: The job's last change of status or owner.
        lease_owner: Who holds the lease (``host:pid:nonce`` of a store instance).
        lease_expires: When that lease runs out unless renewed.
        epoch: How many times a writer took the job: every append checks it.
        cancel_requested: ``store.cancel()`` asked for cancellation, not yet done.
        forked_from: The job this one was forked from, if any.
        wake_at: When a suspended job's timer is due (``None``: it waits for
            input alone, or it is not suspended).
        parent: The job whose durable code started this one
            (``ctx.start_job``), if any.
    """

    id: str
    function: str | None
    status: JobStatus
    args: dict[str, JSONValue] | None
    result: JSONValue
    error: ErrorInfo | None
    created: datetime
    updated: datetime
    lease_owner: str | None
    lease_expires: datetime | None
    epoch: int
    cancel_requested: bool
    forked_from: str | None = None
    wake_at: datetime | None = None
    parent: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job ended (completed, failed or cancelled)."""
        return self.status in TERMINAL

    def describe_call(self) -> str:
        """The job's call as ``fn(a=1, b='x')`` (or ``?`` before its job entry)."""
        if self.function is None:
            return "?"
        return format_call(self.function, self.args)

    def __str__(self) -> str:
        text = f"{self.id} {self.status} {self.describe_call()}"
        if self.status == "running" and self.lease_owner is not None:
            text += f" (owner {self.lease_owner})"
        elif self.status == "suspended":
            text += (
                " (waiting for input)"
                if self.wake_at is None
                else f" (until {self.wake_at.isoformat(timespec='seconds')} or input)"
            )
        if self.error is not None:
            text += f" [{self.error.type}: {self.error.message}]"
        return text


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a worker just took, with the lease epoch that fences its writes."""

    job_id: str
    function: str
    epoch: int
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a worker learns about the jobs it runs.

    Attributes:
        lost: Jobs whose lease this store instance no longer holds.
        cancel: Jobs whose cancellation was requested.
    """

    lost: frozenset[str] = frozenset()
    cancel: frozenset[str] = frozenset()


class JobStore(Protocol):
    """Many jobs in one database: what :class:`~duron.Worker` and the CLI rely on.

    One store object is one lease owner (:attr:`owner`). The store keeps the leases
    it holds alive while it holds them; every append to a job's log checks, in the
    same transaction, that the lease epoch is still the one it took.

    Attributes:
        label: How messages name the store (a path, a URL without password).
        owner: This store instance's lease owner id.
        lease: Seconds a lease lasts without renewal.
    """

    label: str
    owner: str
    lease: float

    def log(self, job_id: str) -> LogStorage:
        """A :class:`~duron.LogStorage` for one job: ``fn.invoke(store.log(id))``."""
        ...

    async def submit(
        self, fn: DurableFn[_P, Any], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> str:
        """Add a job running ``fn(*args, **kwargs)`` for a worker to run; its
        options (``fn.options(job_id=...)``) say how. Idempotent by job id."""
        ...

    async def get(self, job_id: str) -> JobInfo:
        """The job's row."""
        ...

    async def list_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        *,
        function: str
        | DurableFn[..., Any]
        | Iterable[str | DurableFn[..., Any]]
        | None = None,
        id_prefix: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        parent: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobList:
        """One page of the jobs the filters keep, oldest (or newest) first; its
        ``next_cursor`` continues it."""
        ...

    async def count_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        *,
        function: str
        | DurableFn[..., Any]
        | Iterable[str | DurableFn[..., Any]]
        | None = None,
        id_prefix: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        parent: str | None = None,
    ) -> dict[JobStatus, int]:
        """How many jobs the filters keep, per status."""
        ...

    async def function_activity(
        self, functions: Iterable[str | DurableFn[..., Any]]
    ) -> dict[str, FunctionActivity]:
        """What the job table says of the workers of each of these functions."""
        ...

    @overload
    async def result(
        self, job_id: str, fn: DurableFn[..., _T], *, timeout: float | None = None
    ) -> _T: ...
    @overload
    async def result(
        self, job_id: str, fn: None = None, *, timeout: float | None = None
    ) -> Any: ...
    async def result(
        self,
        job_id: str,
        fn: DurableFn[..., Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Wait for the job to end; its result (decoded by ``fn``), or raise its error."""
        ...

    async def cancel(self, job_id: str, *, children: bool = True) -> bool:
        """Ask for the job to be cancelled (and its unfinished child jobs, unless
        ``children=False``); ``False`` if it had already ended."""
        ...

    async def requeue(self, job_id: str) -> None:
        """Make a job a worker gave up on runnable again."""
        ...

    # -- input and output by job id, from any process ---------------------------

    @overload
    async def open_stream(
        self,
        job_id: str,
        name: str,
        mode: Literal["w"],
        *,
        fn: DurableFn[..., Any] | None = None,
    ) -> StoreWriter[Any]: ...
    @overload
    async def open_stream(
        self,
        job_id: str,
        name: str,
        mode: Literal["r"],
        *,
        start: int = 0,
        follow: bool = True,
        fn: DurableFn[..., Any] | None = None,
    ) -> StoreReader[Any]: ...
    async def open_stream(
        self,
        job_id: str,
        name: str,
        mode: Literal["r", "w"],
        *,
        start: int = 0,
        follow: bool = True,
        fn: DurableFn[..., Any] | None = None,
    ) -> StoreWriter[Any] | StoreReader[Any]:
        """``job.open_stream`` by job id: write a ``Stream``/``Signal`` parameter
        (stored in the job's inbox, recorded once when the job receives it), or
        read a ``StreamWriter`` parameter from the job's log."""
        ...

    async def complete_future(
        self,
        job_id: str,
        future_id: str,
        *,
        result: Any = None,
        exception: BaseException | None = None,
        fn: DurableFn[..., Any] | None = None,
    ) -> None:
        """``job.complete_future`` by job id (stored, recorded when received)."""
        ...

    async def is_future_pending(self, job_id: str, future_id: str) -> bool:
        """Whether the job's log shows the future waiting, with no result stored."""
        ...

    async def fork(self, job_id: str, *, at: int, new_id: str | None = None) -> str:
        """A new job whose log is this one's, cut before operation ``at``."""
        ...

    async def prune(
        self,
        *,
        status: JobStatus | Iterable[JobStatus] = ("completed", "failed", "cancelled"),
        older_than: timedelta,
    ) -> int:
        """Delete ended jobs last changed before ``now - older_than``."""
        ...

    def read_log(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The job's entries, oldest first (``JobNotFoundError`` if unknown)."""
        ...

    # -- what a worker uses ----------------------------------------------------

    async def claim(
        self, limit: int, *, functions: Iterable[str] | None = None
    ) -> list[Claim]:
        """Take the leases of up to ``limit`` runnable jobs, oldest first, of
        ``functions`` only (the durable functions the caller runs; ``None``:
        any). Jobs of other functions stay pending."""
        ...

    async def heartbeat(self, job_ids: Iterable[str]) -> Heartbeat:
        """Which of these jobs this owner lost, and which were asked to cancel."""
        ...

    async def fail(self, job_id: str, epoch: int, error: BaseException) -> None:
        """Mark a job failed with ``error`` unless it ended or changed owner."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when a job may have become runnable, or after ``timeout`` s."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections, threads)."""
        ...


# -- shared logic ---------------------------------------------------------------


def new_job_id() -> str:
    """A fresh random job id."""
    return secrets.token_hex(12)


def check_job_id(job_id: object) -> str:
    if not is_job_id(job_id):
        raise UsageError(f"a job id is {JOB_ID_RULE}, not {job_id!r}")
    return job_id


@dataclass(frozen=True, slots=True)
class Submission:
    """A call ready to be stored by ``store.submit()``.

    Attributes:
        job_id: The job's id (the one ``fn.options(job_id=...)`` gave, or a new
            random one).
        entry: The job's first log entry (its function and encoded arguments).
        options: The call's options, as the function carried them.
    """

    job_id: str
    entry: JobStarted
    options: CallOptions


def submission(
    fn: DurableFn[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
) -> Submission:
    """What ``store.submit(fn, *args, **kwargs)`` stores: every keyword is the
    function's; the call's options are the ones ``fn`` carries
    (``fn.options(...)``).

    The arguments are encoded, and checked, before anything is stored (see
    :meth:`~duron.DurableFn.job_entry`).

    Raises:
        UsageError: ``fn`` is not a durable function, or bad arguments for it.
        PayloadError: An argument cannot be encoded or would not decode.
    """
    from duron._durable import DurableFn

    if not isinstance(fn, DurableFn):
        raise UsageError(
            f"submit() takes a @duron.durable function, not {fn!r}; decorate it "
            "with @duron.durable"
        )
    options = fn.call_options
    entry = fn.job_entry(
        args,
        kwargs,
        via="submit()",
        job=options.job_id,
        max_entry_size=max_entry_size,
    )
    job_id = options.job_id if options.job_id is not None else new_job_id()
    return Submission(job_id, entry, options)


def parse_job_entry(raw: bytes | str, job_id: str) -> JobStarted | None:
    """The job entry, if ``raw`` (a log's first entry) is one."""
    entry = decode_entry(raw, job=job_id, offset=0)
    return entry if isinstance(entry, JobStarted) else None


def check_requeue(
    job_id: str, status: str, ended: bool, owner: str | None, live: bool
) -> None:
    """Refuse to requeue a job whose log ended (``ended``: its last entry is an
    end) or whose lease is live."""
    if ended or status in ("completed", "cancelled"):
        raise UsageError(
            f"job {job_id} ended ({status}): it cannot run again; fork it to "
            "re-run it from a step (store.fork / `duron jobs fork`)"
        )
    if owner is not None and live:
        raise UsageError(
            f"job {job_id} is running: {owner} holds its lease; cancel it or "
            "wait for it"
        )


def is_entry_type(raw: bytes, kind: str) -> bool:
    """Whether an encoded entry is of ``kind``, without decoding it.

    Entries are written by :func:`~duron._log.encode_entry` with ``type`` first.
    """
    return raw.startswith(b'{"type":"' + kind.encode() + b'"')


def end_outcome(
    raw: bytes, job_id: str, offset: int
) -> tuple[JobStatus, JSONValue, ErrorInfo | None]:
    """Status, encoded result and error recorded by an ``end`` entry."""
    entry = decode_entry(raw, job=job_id, offset=offset)
    assert isinstance(entry, JobFinished)
    if entry.error is None:
        return "completed", entry.result, None
    if entry.error.type in _CANCELLED_TYPES:
        return "cancelled", None, entry.error
    return "failed", None, entry.error


def fork_prefix(
    entries: Iterable[tuple[int, bytes]], job_id: str, at: int
) -> list[bytes]:
    """The entries a fork ``at`` operation ``at`` copies (see :meth:`JobStore.fork`).

    The prefix ends right before the first entry that belongs to an operation
    numbered ``at`` or more, before a cancel request, or before the job's end:
    operations ``0 .. at-1`` that had completed by then replay, everything from
    operation ``at`` on runs live.

    Raises:
        UsageError: ``at`` is negative, or the log holds no job entry.
    """
    if type(at) is not int or at < 0:
        raise UsageError(f"fork(at=...) takes an operation number >= 0, not {at!r}")
    out: list[bytes] = []
    for offset, raw in entries:
        entry = decode_entry(raw, job=job_id, offset=offset)
        if not out:
            if not isinstance(entry, JobStarted):
                raise UsageError(f"job {job_id} has no job entry: nothing to fork")
            out.append(raw)
            continue
        if isinstance(entry, OutputSent):
            out.append(raw)  # replay counts it: the value is not recorded twice
            continue
        op_id = getattr(entry, "id", None)
        if op_id is None or op_id >= at:
            break  # the end, a cancel request, or the first op not kept
        out.append(raw)
    if not out:
        raise UsageError(f"job {job_id} has no job entry: nothing to fork")
    return out


def job_info_from_row(
    row: tuple[Any, ...], when: Callable[[Any], datetime | None], store: str
) -> JobInfo:
    """A job row (its columns in the order of ``JOB_COLUMNS``) as a :class:`JobInfo`,
    every column checked; ``when`` turns a time column into a datetime.

    Raises:
        StorageError: A column holds what Duron never writes there (the row is
            damaged): the message names the job and the column.
    """
    (
        job_id,
        function,
        args,
        status,
        result,
        error,
        created,
        updated,
        owner,
        expires,
        epoch,
        cancel,
        forked_from,
        wake_at,
        parent,
    ) = row
    column = "args"
    try:
        decoded_args = _json_column(args)
        if decoded_args is not None and type(decoded_args) is not dict:
            raise InvalidField("", f"must be an object, not {json_type(decoded_args)}")
        column = "result"
        decoded_result = _json_column(result)
        column = "error"
        decoded_error = _json_column(error)
        info_error = None if error is None else ErrorInfo.from_json(decoded_error)
        column = "status"
        if status not in STATUSES:
            raise InvalidField(
                "", f"must be one of {', '.join(STATUSES)}, not {status!r}"
            )
        if status == "failed" and info_error is None:
            raise InvalidField("", "is 'failed' but column 'error' is empty")
        column = "created"
        created_at = when(created)
        column = "updated"
        updated_at = when(updated)
        column = "lease_expires"
        expires_at = when(expires)
        column = "wake_at"
        wake_at_time = when(wake_at)
    except InvalidField as exc:
        what = exc.problem if not exc.path else f"holds an error whose {exc}"
        raise StorageError(
            store=store,
            operation="read",
            job=job_id,
            detail=f"its row is damaged: column {column!r} {what}",
        ) from None
    assert created_at is not None
    assert updated_at is not None
    return JobInfo(
        id=job_id,
        function=function,
        status=status,
        args=decoded_args,
        result=decoded_result,
        error=info_error,
        created=created_at,
        updated=updated_at,
        lease_owner=owner,
        lease_expires=expires_at,
        epoch=epoch,
        cancel_requested=bool(cancel),
        forked_from=forked_from,
        wake_at=wake_at_time,
        parent=parent,
    )


def _json_column(text: str | bytes | None) -> JSONValue:
    """A JSON column's value; :class:`InvalidField` if it is not what Duron writes."""
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidField("", f"is not JSON ({exc})") from None
    # Duron wrote it from within an entry: one level less deep than an entry may be.
    if len(text) >= 2 * MAX_DEPTH:
        try:
            orjson.dumps([value])
        except orjson.JSONEncodeError:
            raise InvalidField(
                "", f"is nested more than {MAX_DEPTH - 1} levels deep"
            ) from None
    return value  # type: ignore[no-any-return]


def timestamp(t: float | None) -> datetime | None:
    """A time stored as seconds since the epoch, as an aware datetime.

    Raises:
        InvalidField: ``t`` is not a time a datetime can hold.
    """
    if t is None:
        return None
    if type(t) not in (float, int) or not T_MIN <= t <= T_MAX:
        raise InvalidField(
            "",
            f"must be a time within the years 1 to 9999 (seconds since 1970), not {t!r}",
        )
    return datetime.fromtimestamp(t, tz=timezone.utc)


def seconds(delta: timedelta | float) -> float:
    value = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if math.isnan(value) or value < 0:
        raise UsageError(f"older_than must be a duration >= 0, not {delta!r}")
    return value


def statuses(status: JobStatus | Iterable[JobStatus], *, ended: bool) -> list[str]:
    wanted: list[str] = [status] if isinstance(status, str) else list(status)
    allowed = TERMINAL if ended else frozenset(STATUSES)
    for s in wanted:
        if s not in allowed:
            choices = ", ".join(repr(a) for a in STATUSES if a in allowed)
            raise UsageError(f"status must be one of {choices}, not {s!r}")
    if not wanted:
        raise UsageError("status must name at least one status")
    return wanted


@overload
def outcome_of(info: JobInfo, fn: DurableFn[..., _T]) -> _T: ...
@overload
def outcome_of(info: JobInfo, fn: None = None) -> Any: ...
def outcome_of(info: JobInfo, fn: DurableFn[..., Any] | None = None) -> Any:
    """An ended job's result (decoded by ``fn``'s return type if given), or raise.

    Raises:
        JobCancelledError: The job was cancelled.
        Exception: The job's recorded error, rebuilt as its own type when possible.
        PayloadError: The recorded result does not validate as ``fn``'s return type.
    """
    if info.status == "cancelled":
        message = info.error.message if info.error else f"job {info.id} was cancelled"
        raise JobCancelledError(message)
    if info.status == "failed":
        assert info.error is not None
        raise rebuild(info.error)
    if fn is None:
        return info.result
    if info.function is not None and info.function != fn.name:
        raise UsageError(
            f"job {info.id} ran durable function {info.function}, not {fn.name}; "
            "pass the function that ran it to decode its result"
        )
    return decode_recorded(
        fn.codec,
        info.result,
        fn.sig.return_annotation,
        what=f"result of durable function {fn.name}",
        job=info.id,
    )
