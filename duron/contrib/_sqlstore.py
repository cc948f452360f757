"""What the SQL job stores share: the :class:`~duron.JobStore` API, written once.

The SQLite store and the PostgreSQL store keep the same two tables (``jobs`` and
``entries``) and follow the same rules: a job's writer holds a lease (owner,
expiry, epoch), a claim bumps the epoch, every append checks it, an ``end`` entry
sets the job's outcome. :class:`SQLStore` holds what does not depend on the
database: checking arguments, encoding a submitted call, waiting for a result,
deciding what a heartbeat reports, keeping the map of held leases. Each store
supplies the statements (its ``_``-prefixed hooks), run in its own transactions
through its own engine.
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

import anyio
import orjson

from duron._codec import decode_recorded
from duron._errors import DuplicateJobError, JobCancelledError, JobNotFoundError
from duron._job_query import function_names
from duron._jobstore import (
    Claim,
    Heartbeat,
    JobInfo,
    JobStatus,
    check_job_id,
    fork_prefix,
    job_info_from_row,
    new_job_id,
    outcome_of,
    parse_job_entry,
    seconds,
    statuses,
    submission,
)
from duron._limits import LogLimits, LogSize
from duron._log import JobFinished, OutputSent, decode_entry, encode_entry
from duron._recorded_errors import error_info, rebuild
from duron._resubmit import check_resubmit
from duron.contrib._job_search import JOB_COLUMNS, JobSearch
from duron.contrib._sqlinbox import StoreInbox
from duron.contrib._sqllog import archived_runs, archived_seq
from duron.contrib._wakeups import DONE, WORK, Watchers

if TYPE_CHECKING:
    import threading
    from datetime import datetime, timedelta

    from duron._durable import DurableFn
    from duron._log import JobStarted
    from duron._outage import Outage
    from duron.contrib._lease_times import LeaseTimes

__all__ = [
    "DEFAULT_LEASE",
    "DESCENDANTS",
    "JOB_COLUMNS",
    "READ_CHUNK",
    "TERMINAL_SQL",
    "WAKE",
    "LogAccess",
    "SQLStore",
    "cancelled_before_start",
    "check_lease",
    "fork_copy",
    "fork_taken",
    "new_owner",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_S = TypeVar("_S", bound="SQLStore")

READ_CHUNK = 1000
OUTPUT_POLL = 0.01
"""Seconds between the first looks for more output of a job that runs elsewhere."""
TERMINAL_SQL = "('completed', 'failed', 'cancelled')"


class StoreEngine(Protocol):
    """What the shared code uses of a store's engine."""

    held: dict[str, int]
    """Job id -> epoch of every lease this store object holds (and renews)."""

    leases: LeaseTimes
    """When each of those leases was last confirmed."""

    outage: Outage
    """Whether the database answers, as this store object last found it."""

    @property
    def watchers(self) -> Watchers:
        """The tasks waiting on this store (inbox feeds ring and wait here)."""
        ...

    async def wait_signal(
        self, mask: int, timeout: float, job: str | None = None
    ) -> None: ...

    def stop(self) -> threading.Thread | None: ...

    async def close(self) -> None: ...


def new_owner() -> str:
    """A lease owner id for a new store object: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


DESCENDANTS = (
    "WITH RECURSIVE tree(id) AS (SELECT id FROM {t} WHERE parent_id = {m} "
    "UNION SELECT j.id FROM {t} AS j JOIN tree ON j.parent_id = tree.id) "
)
"""SQL naming a job's descendants (``tree``); format ``t`` (the jobs table) and
``m`` (the parameter mark)."""

WAKE = (
    "status = CASE status WHEN 'suspended' THEN 'pending' ELSE status END, "
    "wake_at = CASE status WHEN 'suspended' THEN NULL ELSE wake_at END"
)
"""SQL (a ``SET`` clause) making a suspended job runnable now: input or a cancel
request arrived for it."""

DEFAULT_LEASE = 8.0
"""Seconds a lease lasts by default. Leases are renewed every third of that by the
store's own thread (so a busy event loop does not stop renewal), and a worker
polls for work every half second: the jobs of a killed process run again elsewhere
within about 8.5 s."""


def check_lease(lease: float) -> float:
    if not lease > 0:
        raise ValueError(f"lease must be a number of seconds > 0, not {lease!r}")
    return float(lease)


def cancelled_before_start(job_id: str) -> str:
    """The error (JSON text) of a job cancelled before it ran."""
    error = error_info(
        JobCancelledError(f"job {job_id} was cancelled before it started")
    )
    return orjson.dumps(error.to_json()).decode()


def fork_copy(
    entries: Iterable[tuple[int, bytes]], job_id: str, at: int
) -> tuple[JobStarted, list[bytes]]:
    """The job entry and the entries a fork at operation ``at`` copies."""
    prefix = fork_prefix(entries, job_id, at)
    first = parse_job_entry(prefix[0], job_id)
    assert first is not None
    return first, prefix


def fork_taken(new_id: str, job_id: str, at: int) -> DuplicateJobError:
    return DuplicateJobError(
        job=new_id,
        recorded="another job",
        requested=f"a fork of {job_id} at operation {at}",
    )


_E = TypeVar("_E")


@dataclass(frozen=True, slots=True)
class LogAccess(Generic[_E]):
    """The parts of a store that one job's log works with (see :mod:`._sqllog`):
    the store hands them over when it makes the log, rather than the log reaching
    into the store."""

    engine: _E  # the store's engine
    attached: set[str]  # jobs whose log is open on this store object
    read: Callable[[str], AsyncIterator[tuple[int, bytes]]]  # a job's entries
    q: str = ""  # the schema-qualified table prefix, where the store has one


class SQLStore(JobSearch, StoreInbox, ABC):
    """The job store API over a SQL database (see the module docstring).

    Attributes:
        label: How messages name the store.
        owner: This store object's lease owner id (``host:pid:nonce``).
        lease: Seconds a lease lasts without renewal.
        limits: The size limits of its jobs' logs.
        outage: Whether the database answers, as this store object last found it
            (a :class:`~duron.Worker` on the store reports there too).
    """

    label: str
    owner: str
    lease: float
    limits: LogLimits
    outage: Outage
    _engine: StoreEngine

    def _start(self, engine: StoreEngine) -> None:
        self._engine = engine
        self.outage = engine.outage
        self._attached: set[str] = set()  # jobs whose log is open here
        # The thread holds no reference to the store: dropping the store stops it.
        weakref.finalize(self, engine.stop)

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Close the store's connections and stop its thread once queued work is
        done (idempotent)."""
        await self._engine.close()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- jobs -----------------------------------------------------------------------

    async def submit(
        self, fn: DurableFn[_P, Any], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> str:
        """Add a job running ``fn(*args, **kwargs)``, for a worker to run.

        Every argument is the durable function's; options of the call travel on
        the function: ``store.submit(checkout.options(job_id="order-42"), order)``.
        Submitting again under the same job id with the same call returns the
        same id and changes nothing, so a request handler may retry freely.

        Args:
            fn: A ``@duron.durable`` function, or one carrying options
                (``fn.options(job_id=...)``; without a job id, a random one).
            *args: Its arguments (after the context).
            **kwargs: Its keyword arguments.

        Returns:
            The job id.

        Raises:
            DuplicateJobError: The job id names a job with other arguments or
                another function.
            PayloadError: An argument cannot be encoded for the log.
            UsageError: Bad arguments for ``fn``, or a call option among them
                (``job_id=``: pass it as ``fn.options(job_id=...)``).
        """
        sub = submission(fn, args, kwargs, max_entry_size=self.limits.max_entry_size)
        raw = encode_entry(sub.entry).decode()
        added, first = await self._add(
            sub.job_id, sub.entry, raw, orjson.dumps(sub.entry.args).decode()
        )
        if not added:
            # Decoding arguments runs user types: here, not on the store's thread.
            check_resubmit(fn, sub.job_id, sub.entry, first)
        return sub.job_id

    async def start_child(
        self,
        fn: DurableFn[..., Any],
        job_id: str,
        entry: JobStarted,
        *,
        parent: str,
        future: str,
    ) -> None:
        """Add the child job ``job_id`` of ``parent`` (what ``ctx.start_job``
        does, from inside an effect): its end completes the parent's future
        ``future``. Idempotent like :meth:`submit`.

        Raises:
            DuplicateJobError: ``job_id`` names a job with another call.
        """
        raw = encode_entry(entry).decode()
        added, first = await self._add(
            job_id, entry, raw, orjson.dumps(entry.args).decode(), (parent, future)
        )
        if not added:
            check_resubmit(fn, job_id, entry, first)

    async def get(self, job_id: str) -> JobInfo:
        """The job's row.

        Raises:
            JobNotFoundError: No such job.
        """
        row = await self._job_row(job_id)
        if row is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        return self._job_info(row)

    async def log_sizes(self, job_ids: Iterable[str]) -> dict[str, LogSize]:
        """How many entries, and bytes, each job's log holds.

        Reads every entry of these jobs (their sizes, summed in the database):
        it costs what reading their logs costs, so ask for the jobs of a page,
        not for all of them.

        Args:
            job_ids: The jobs.

        Returns:
            By job id; a job without entries (or unknown) is left out.
        """
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return {}
        rows = await self._log_sizes(wanted)
        tops = dict(await self._archive_tops(wanted))
        return {
            str(job): LogSize(int(n), int(size), archived_runs(tops.get(job)) + 1)
            for job, n, size in rows
        }

    async def run_count(self, job_id: str) -> int:
        """How many runs the job's chain holds: 1 unless it continued as new (0:
        no entries yet)."""
        top = dict(await self._archive_tops([job_id])).get(job_id)
        if top is not None:
            return archived_runs(top) + 1
        return 1 if await self._read_span(job_id, 0, 1, 1) else 0

    async def read_run(self, job_id: str, run: int) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of run ``run`` of the job's chain (0: the first), as
        ``(seq, entry)``: the current run's numbered from 0, an archived one's
        as archived (nothing for a run the chain does not hold)."""
        runs = await self.run_count(job_id)
        if not 0 <= run < runs:
            return
        if run == runs - 1:
            start, stop = 0, 2**63 - 1
        else:
            start, stop = archived_seq(run), archived_seq(run + 1)
        while True:
            rows = await self._read_span(job_id, start, stop, READ_CHUNK)
            for row in rows:
                yield row
            if len(rows) < READ_CHUNK:
                return
            start = rows[-1][0] + 1

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
        """Wait for the job to end and return its result, or raise its error.

        A job ending through this store object wakes the waiter at once; one
        ending in another process is seen by polling (every 10 ms, backing off
        to 1 s).

        Args:
            job_id: The job.
            fn: The durable function, to decode the result into its return type;
                without it the result is the recorded JSON data.
            timeout: Give up after this many seconds.

        Returns:
            The job's result.

        Raises:
            JobNotFoundError: No such job.
            JobCancelledError: The job was cancelled.
            TimeoutError: ``timeout`` passed first.
            Exception: The job's error, as its own type when it can be rebuilt.
        """
        deadline = None if timeout is None else anyio.current_time() + timeout
        delay = 0.01
        while True:
            info = await self.get(job_id)
            if info.finished:
                return outcome_of(info, fn)
            wait = delay
            if deadline is not None:
                left = deadline - anyio.current_time()
                if left <= 0:
                    raise TimeoutError(
                        f"job {job_id} did not finish within {timeout} s "
                        f"(status {info.status})"
                    )
                wait = min(wait, left)
            await self._engine.wait_signal(DONE, wait, job_id)
            delay = min(delay * 2, 1.0)

    async def cancel(self, job_id: str, *, children: bool = True) -> bool:
        """Ask for the job to be cancelled.

        A job that never ran is cancelled at once. Otherwise the worker running
        it (or the next to claim it) calls ``job.cancel()``: the request is
        logged, and the durable code gets the cancellation at its next await. If
        it lets the cancellation end it, the job ends ``cancelled`` and
        :meth:`result` raises :class:`~duron.JobCancelledError`.

        Args:
            job_id: The job.
            children: Also ask every unfinished job it started with
                ``ctx.start_job`` (and theirs, all the way down) to cancel;
                ``False`` leaves them running.

        Returns:
            ``False`` if the job had already ended, else ``True``.

        Raises:
            JobNotFoundError: No such job.
        """
        return await self._cancel(job_id, children)

    async def requeue(self, job_id: str) -> None:
        """Make a job runnable again that a worker failed without its log ending.

        That is a job whose function a worker did not know, whose log its code no
        longer replays, or whose storage failed: fix the cause, then requeue it.
        A job whose lease expired (its process died) is made pending at once.

        Raises:
            JobNotFoundError: No such job.
            UsageError: The job's log ended (fork it to run it again), or a live
                lease holds it.
        """
        await self._requeue(job_id)

    async def fork(self, job_id: str, *, at: int, new_id: str | None = None) -> str:
        """A new pending job that re-runs ``job_id`` from operation ``at``.

        Operations are numbered from 0 in the order the durable code issued them
        (the ``id`` of their log entries; ``duron inspect`` shows them). The new
        job's log is the old one's prefix up to the first entry of operation
        ``at``: operations before it that had completed by then replay without
        running, everything from operation ``at`` on runs live. ``at=0`` re-runs
        the whole job with the same arguments. The job entry is copied as is (same
        arguments, same random seed).

        Args:
            job_id: The job to fork (in any status).
            at: The first operation to run again.
            new_id: The new job's id (default: a random one).

        Returns:
            The new job's id.

        Raises:
            JobNotFoundError: No such job.
            DuplicateJobError: ``new_id`` is taken.
        """
        nid = new_job_id() if new_id is None else check_job_id(new_id)
        await self._fork(job_id, nid, at)
        return nid

    async def prune(
        self,
        *,
        status: JobStatus | Iterable[JobStatus] = ("completed", "failed", "cancelled"),
        older_than: timedelta,
    ) -> int:
        """Delete ended jobs, with their logs, last changed before ``now - older_than``.

        Args:
            status: Which ended statuses to delete (``completed``, ``failed``,
                ``cancelled``; default all three).
            older_than: How long a job must have been unchanged.

        Returns:
            How many jobs were deleted.

        Raises:
            UsageError: A status that is not an ended one.
        """
        return await self._prune(statuses(status, ended=True), seconds(older_than))

    async def read_log(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The job's log entries, oldest first, as ``(seq, entry)``.

        Raises:
            JobNotFoundError: No such job.
        """
        if not await self._exists(job_id):
            raise JobNotFoundError(job=job_id, store=self.label)
        async for item in self._read(job_id):
            yield item

    async def _read(self, job_id: str) -> AsyncIterator[tuple[int, bytes]]:
        start = 0
        while True:
            rows = await self._read_chunk(job_id, start, READ_CHUNK)
            for row in rows:
                yield row
            if len(rows) < READ_CHUNK:
                return
            start = rows[-1][0] + 1

    # -- what a worker uses ---------------------------------------------------------

    async def claim(
        self, limit: int, *, functions: Iterable[str] | None = None
    ) -> list[Claim]:
        """Take the leases of up to ``limit`` runnable jobs, oldest first.

        Runnable: pending, or running under a lease that expired (its process
        died or stalled). Each claim bumps the job's epoch. The jobs this store
        object holds are skipped: a lease that ran out while this process stalled
        is renewed, or lost to another owner, never claimed twice.

        Args:
            limit: At most this many jobs.
            functions: Only jobs of these durable functions (by name), the ones
                the caller can run; jobs of any other function stay pending
                for a caller that has it. ``None``: jobs of any function.

        Raises:
            UsageError: ``functions`` is a string, or holds something else than
                names.
        """
        names = None if functions is None else function_names(functions)
        if limit <= 0 or names == ():
            return []
        # Jobs whose log is open here are skipped too, even before their lease
        # is taken (held): a lease of this owner that nobody holds is claimable.
        engine = self._engine
        mine = set(engine.held) | self._attached
        since = time.monotonic()
        rows = await self._claim_rows(limit, list(mine), names)
        rows.sort(key=lambda r: (r[4], r[0]))
        claims = [Claim(r[0], r[1], r[2], bool(r[3])) for r in rows]
        engine.leases.renewed(since, [c.job_id for c in claims])
        for c in claims:
            engine.held[c.job_id] = c.epoch
        return claims

    async def heartbeat(self, job_ids: Iterable[str]) -> Heartbeat:
        """Which of these jobs this store lost, and which were asked to cancel."""
        ids = list(job_ids)
        if not ids:
            return Heartbeat()
        rows = await self._lease_rows(ids)
        # Read after the reply: a job this store released meanwhile (it ended, or
        # stopped) is no longer held, and so not lost.
        held = self._engine.held
        lost = frozenset(
            j
            for j in ids
            if j in held
            and (j not in rows or rows[j][0] != self.owner or rows[j][1] != held[j])
        )
        cancel = frozenset(j for j in ids if j in rows and j not in lost and rows[j][2])
        return Heartbeat(lost, cancel)

    async def fail(self, job_id: str, epoch: int, error: BaseException) -> None:
        """Mark a job failed with ``error``, unless it ended or changed owner."""
        info = orjson.dumps(error_info(error).to_json()).decode()
        try:
            await self._fail(job_id, epoch, info)
        finally:
            if self._engine.held.get(job_id) == epoch:
                del self._engine.held[job_id]

    async def wait_for_work(self, timeout: float) -> None:
        """Return when this store object submitted, requeued or cancelled a job, or
        after ``timeout`` seconds (other processes' submissions are seen by
        polling)."""
        await self._engine.wait_signal(WORK, timeout)

    # -- what each store supplies -------------------------------------------------

    def _job_info(self, row: tuple[Any, ...]) -> JobInfo:
        """A :data:`JOB_COLUMNS` row as a :class:`~duron.JobInfo` (a damaged column
        is a :class:`~duron.StorageError`)."""
        return job_info_from_row(row, self._when, self.label)

    @staticmethod
    def _when(value: Any) -> datetime | None:
        """A time column's value as an aware datetime (what the driver returns,
        unless the store keeps times otherwise)."""
        return value  # type: ignore[no-any-return]

    @abstractmethod
    async def _add(
        self,
        job_id: str,
        entry: JobStarted,
        raw: str,
        args: str,
        parent: tuple[str, str] | None = None,
    ) -> tuple[bool, str | None]:
        """Insert a pending job whose log is its job entry ``raw`` (a child of
        ``parent``: its job id and the future its end completes): ``(True,
        None)``; or, when the id is taken, ``(False, its log's first entry)``
        (``None`` for an empty log) for :func:`~duron._resubmit.check_resubmit`."""

    @abstractmethod
    async def _job_row(self, job_id: str) -> tuple[Any, ...] | None:
        """The job's :data:`JOB_COLUMNS`."""

    @abstractmethod
    async def _cancel(self, job_id: str, children: bool) -> bool:
        """:meth:`cancel` in one transaction."""

    @abstractmethod
    async def _requeue(self, job_id: str) -> None:
        """:meth:`requeue` in one transaction (checked by
        :func:`~duron._jobstore.check_requeue`)."""

    @abstractmethod
    async def _fork(self, job_id: str, new_id: str, at: int) -> None:
        """Copy :func:`fork_copy` of the job's log as the pending job ``new_id``."""

    @abstractmethod
    async def _prune(self, wanted: list[str], age: float) -> int:
        """Delete the jobs of these statuses unchanged for ``age`` seconds."""

    @abstractmethod
    async def _exists(self, job_id: str) -> bool: ...

    @abstractmethod
    async def _archive_tops(self, job_ids: list[str]) -> list[tuple[str, int]]:
        """``(job_id, highest seq below 0)`` of each of these jobs that
        continued as new."""

    @abstractmethod
    async def _read_span(
        self, job_id: str, start: int, stop: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries numbered ``start <= seq < stop``, by seq."""

    @abstractmethod
    async def _log_sizes(self, job_ids: list[str]) -> list[tuple[Any, ...]]:
        """``(job_id, entry count, total bytes)`` of the jobs with entries."""

    @abstractmethod
    async def _read_chunk(
        self, job_id: str, start: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries of the job from sequence number ``start`` on."""

    @abstractmethod
    async def _claim_rows(
        self, limit: int, mine: list[str], functions: tuple[str, ...] | None
    ) -> list[tuple[str, str, int, Any, Any]]:
        """Claim up to ``limit`` runnable jobs not in ``mine``, of ``functions``
        (any if ``None``), oldest first: ``(id, function, epoch,
        cancel_requested, created)`` of each."""

    @abstractmethod
    async def _lease_rows(self, ids: list[str]) -> dict[str, tuple[str, int, Any]]:
        """``id -> (lease owner, epoch, cancel_requested)`` of those of ``ids``
        that this store's heartbeat must see (at least the ones it owns)."""

    @abstractmethod
    async def _fail(self, job_id: str, epoch: int, error: str) -> None:
        """Set the job failed with ``error`` if it did not end and its epoch is
        still ``epoch``."""

    async def _output(
        self,
        job_id: str,
        dfn: DurableFn[..., Any],
        name: str,
        start: int,
        follow: bool,
    ) -> AsyncIterator[Any]:
        """The values durable code sent on ``name``, from index ``start``, read
        from the job's ``out`` entries; following the log (polled every 10 ms,
        backing off to 200 ms while nothing comes) until the stream closes or
        the job ends."""
        annotation = next(i.annotation for i in dfn.injections if i.name == name)
        index = 0
        seq = 0
        delay = OUTPUT_POLL
        while True:
            rows = await self._read_chunk(job_id, seq, READ_CHUNK)
            for offset, raw in rows:
                seq = offset + 1
                entry = decode_entry(raw, job=job_id, offset=offset)
                if isinstance(entry, JobFinished):
                    return
                if not isinstance(entry, OutputSent) or entry.name != name:
                    continue
                if entry.closed:
                    if entry.error is not None:
                        raise rebuild(entry.error)
                    return
                if index >= start:
                    yield decode_recorded(
                        dfn.codec,
                        entry.value,
                        annotation,
                        what=f"value {index} of stream {name!r}",
                        job=job_id,
                    )
                index += 1
            if len(rows) == READ_CHUNK:
                delay = OUTPUT_POLL
                continue
            if rows:
                delay = OUTPUT_POLL
            elif not follow:
                return
            else:
                info = await self.get(job_id)
                if info.finished:
                    # Its end entry may have landed since the read above.
                    if await self._read_chunk(job_id, seq, 1):
                        continue
                    return
                await self._engine.wait_signal(DONE, delay, job_id)
                delay = min(delay * 2, 0.2)
