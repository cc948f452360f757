"""One job's log in a SQL store: the lease it is written under, and its appends.

``acquire()`` takes the job's lease, or adopts the one a worker of the same store
object claimed; ``release()`` gives it back (a job released before it ended is
pending again); ``append()`` writes entries only while the lease epoch is still the
one it took, checked in the transaction that writes them. A job entry at the start
of the log records the job's function and arguments on its row, an ``end`` entry
its outcome, in that same transaction. :class:`SQLLog` holds that protocol; each
store supplies the statements.

A job that continues as new keeps the same job id: in the transaction that
writes its run's end entry (which names the next run), the run's entries move
below sequence number 0 (:func:`archived_seq`: run ``r`` of the chain at
``ARCHIVE_BASE + r * RUN_SPAN + i``) and the next run's job entry is written at
0, so the current run is always the entries numbered from 0, as before, and the
runs before it stay readable in order. One transaction: the switch is atomic.

The log also offers the job's inbox to the run (``inbox_fetch``, ``inbox_mark``,
``inbox_wait``: see :mod:`duron._inbox_feed`), so that input sent through the
store reaches the job however it runs: on a worker or ``fn.invoke(store.log(id))``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from duron._entries import InvalidField
from duron._errors import (
    LeaseLostError,
    LogLockedError,
    StorageError,
    StoreUnavailableError,
)
from duron._inbox import InboxItem, item_from_row
from duron._jobstore import (
    TERMINAL,
    JobStatus,
    end_outcome,
    is_entry_type,
    parse_job_entry,
)

if TYPE_CHECKING:
    from duron._limits import LogLimits
    from duron.contrib._sqlstore import LogAccess, SQLStore

__all__ = [
    "ARCHIVE_BASE",
    "INBOX_BATCH",
    "RUN_SPAN",
    "Ending",
    "SQLLog",
    "Started",
    "Suspension",
    "archived_runs",
    "archived_seq",
    "lost_detail",
]

ARCHIVE_BASE = -(2**62)
"""Sequence number of the first entry of a job's first run once it continued as new."""
RUN_SPAN = 2**32
"""Sequence numbers each archived run of a chain spans (its entries at most)."""


def archived_seq(run: int) -> int:
    """The sequence number of the first entry of archived run ``run``."""
    return ARCHIVE_BASE + run * RUN_SPAN


def archived_runs(top: int | None) -> int:
    """How many archived runs a job has, given its highest negative ``seq``."""
    return 0 if top is None else (int(top) - ARCHIVE_BASE) // RUN_SPAN + 1


INBOX_BATCH = 256
"""Inbox items a run takes at a time."""

_S = TypeVar("_S", bound="SQLStore")
_log = logging.getLogger("duron")


@dataclass(frozen=True, slots=True)
class Started:
    """What a job entry sets on the job's row."""

    function: str
    args: str  # JSON text


@dataclass(frozen=True, slots=True)
class Suspension:
    """How a job that waits on durable things only is released (suspended).

    Attributes:
        until: When its timer wakes it (seconds since the epoch), or ``None``.
        seen: The last inbox item its run took: a later one wakes it at once.
    """

    until: float | None
    seen: int


@dataclass(frozen=True, slots=True)
class Ending:
    """What an ``end`` entry sets on the job's row."""

    status: JobStatus
    result: str | None  # JSON text of a completed job's result
    error: str | None  # JSON text of the recorded error


def lost_detail(row: tuple[str | None, int, str] | None, epoch: int) -> str:
    """Why a writer of ``epoch`` lost the job whose ``(lease_owner, epoch,
    status)`` is ``row`` now (``None``: the row is gone)."""
    if row is None:
        return "the job was deleted from the store"
    owner, current, status = row
    if current == epoch:
        # Nobody took the job: its lease was given back (this writer released
        # it, or the job was requeued or failed by hand).
        return f"this writer's lease was released (epoch {epoch}); the job is {status}"
    took = (
        f"another writer took the job over (epoch {current}; this writer had "
        f"{epoch}) after this writer's lease expired"
    )
    if owner is not None:
        return took.replace("another writer", owner, 1)
    if status in TERMINAL:
        return f"{took}, and the job has since ended ({status})"
    return f"{took}, and has since released it (the job is {status})"


class SQLLog(ABC, Generic[_S]):
    """One job's log in a SQL store (see the module docstring)."""

    keeps_output = True
    """What durable code sends on ``StreamWriter`` parameters is recorded too
    (``out`` entries), for ``store.open_stream(job_id, name, "r")``."""

    def __init__(self, store: _S, job_id: str, access: LogAccess[Any]) -> None:
        self.store = store
        self.job_id = job_id
        self._access = access
        self.label = job_id
        self.limits: LogLimits = store.limits
        self._epoch: int | None = None
        self._next_seq = 0
        self._inbox_seen = 0  # the last inbox item a fetch returned
        # (wake time, entries written, last inbox item taken) when the run
        # chose to suspend the job
        self._suspend: tuple[float | None, int, int] | None = None

    async def acquire(self) -> None:
        access = self._access
        job_id = self.job_id
        if self._epoch is not None or job_id in access.attached:
            raise LogLockedError(job=job_id, holder="another job in this process")
        held = access.engine.held.get(job_id)
        access.attached.add(job_id)
        try:
            if held is not None:
                # A worker of this store claimed the job: write under its lease.
                self._next_seq = await self._adopt(held)
                self._epoch = held
                return
            since = time.monotonic()
            epoch, self._next_seq = await self._take()
            access.engine.leases.renewed(since, (job_id,))
            access.engine.held[job_id] = epoch
            self._epoch = epoch
        except BaseException:
            access.attached.discard(job_id)
            if held is not None and access.engine.held.get(job_id) == held:
                # Checking the claim failed (the lease is gone, or the store
                # could not be asked): this store stops renewing it, and claims
                # the job again if the lease turns out to be still its own.
                del access.engine.held[job_id]
            raise

    async def release(self) -> None:
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        store = self.store
        job_id = self.job_id
        held = self._access.engine.held
        self._access.attached.discard(job_id)
        if held.get(job_id) == epoch:
            del held[job_id]
        suspend, self._suspend = self._suspend, None
        suspension = None
        if suspend is not None and suspend[1] == self._next_seq:
            # Nothing was written since the job was found waiting: it still is.
            # Input fetched after the decision may not be recorded yet: only
            # what the run had taken then counts as seen.
            suspension = Suspension(suspend[0], suspend[2])
        try:
            await self._unlease(epoch, wrote=self._next_seq > 0, suspension=suspension)
        except StoreUnavailableError as exc:
            # Nothing is lost: the lease runs out by itself, and this store
            # object (which no longer holds it) claims the job back at once when
            # the database answers again. Failing here would only hide, in an
            # ``async with`` block, the error that made the job stop.
            store.outage.failed(exc)
            _log.info(
                "duron: job %s: could not give its lease back (%s); it runs out "
                "by itself",
                job_id,
                exc,
            )

    def suspend_until(self, until: float | None) -> None:
        """Release the job, next time, as suspended: holding no worker until
        ``until`` (seconds since the epoch; ``None``: no timer), input for it, or
        a cancel request. If anything is written before the release, the job
        was not waiting after all, and is released as usual (pending)."""
        self._suspend = (until, self._next_seq, self._inbox_seen)

    def lease_fresh(self) -> bool:
        """Whether this writer surely still holds the job's lease for a while
        (see :mod:`._lease_times`): asked before each live effect starts."""
        engine = self._access.engine
        epoch = self._epoch
        return (
            epoch is not None
            and engine.held.get(self.job_id) == epoch
            and engine.leases.fresh(self.job_id)
        )

    async def confirm_lease(self) -> None:
        """Renew the lease now, or raise :class:`~duron.LeaseLostError` if another
        writer took the job (a stalled process that woke up past its lease)."""
        epoch = self._epoch
        job_id = self.job_id
        engine = self._access.engine
        if epoch is None or engine.held.get(job_id) != epoch:
            raise LeaseLostError(
                job=job_id, detail="this writer no longer holds the job's lease"
            )
        since = time.monotonic()
        await self._renew(epoch)
        engine.leases.renewed(since, (job_id,))

    def read(self) -> AsyncIterator[tuple[int, bytes]]:
        return self._access.read(self.job_id)

    async def append(self, entries: Sequence[bytes], /) -> None:
        epoch = self._epoch
        job_id = self.job_id
        if epoch is None:
            raise StorageError(
                kind="log",
                store=job_id,
                operation="append",
                detail="not open for writing (acquire() first)",
            )
        if not entries:
            return
        start = self._next_seq
        started = None
        if start == 0 and is_entry_type(entries[0], "job"):
            first = parse_job_entry(entries[0], job_id)
            assert first is not None
            started = Started(first.fn, orjson.dumps(first.args).decode())
        ending = None
        if is_entry_type(entries[-1], "end"):
            status, result, error = end_outcome(
                entries[-1], job_id, start + len(entries) - 1
            )
            ending = Ending(
                status,
                orjson.dumps(result).decode() if status == "completed" else None,
                orjson.dumps(error.to_json()).decode() if error else None,
            )
        await self._write(epoch, start, entries, started, ending)
        self._next_seq = start + len(entries)

    # -- a chain of runs --------------------------------------------------------------

    async def continue_log(
        self,
        entries: Sequence[bytes],
        first: bytes,
        /,
        *,
        inbox_done: Sequence[int] = (),
    ) -> None:
        """End the current run with ``entries`` (the last one names the next
        run), keep it as the chain's latest archived run, and begin the next run
        with its job entry ``first``: one transaction, under this writer's lease."""
        epoch = self._epoch
        if epoch is None:
            raise StorageError(
                kind="log",
                store=self.job_id,
                operation="append",
                detail="not open for writing (acquire() first)",
            )
        await self._continue(epoch, self._next_seq, entries, first, list(inbox_done))
        self._next_seq = 1

    async def run_count(self) -> int:
        """How many runs the job's chain holds (0: no entries yet)."""
        return await self.store.run_count(self.job_id)

    def read_run(self, run: int) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of run ``run`` of the job's chain (0: the first)."""
        return self.store.read_run(self.job_id, run)

    # -- the job's inbox --------------------------------------------------------------

    async def inbox_fetch(self, after: int, done: Sequence[int]) -> list[InboxItem]:
        """Up to :data:`INBOX_BATCH` inbox items numbered after ``after``, oldest
        first, once the items ``done`` (recorded or dropped) are deleted."""
        rows = await self._inbox_rows(after, list(done), INBOX_BATCH)
        if rows:
            self._inbox_seen = max(self._inbox_seen, int(rows[-1][0]))
        items = []
        for row in rows:
            try:
                items.append(item_from_row(row))
            except (orjson.JSONDecodeError, InvalidField, ValueError) as exc:
                raise StorageError(
                    store=self.store.label,
                    operation="read inbox",
                    job=self.job_id,
                    detail=f"inbox item {row[0]} is damaged: {exc}",
                ) from None
        return items

    def inbox_mark(self) -> int:
        """A mark of the inbox wake-ups so far (see :meth:`inbox_wait`)."""
        return int(self._access.engine.watchers.inbox_mark())

    async def inbox_wait(self, mark: int, timeout: float) -> None:
        """Return once input may have been stored for this job since ``mark``, or
        after ``timeout`` seconds."""
        await self._access.engine.watchers.wait_inbox(self.job_id, mark, timeout)

    def __repr__(self) -> str:
        state = "held" if self._epoch is not None else "released"
        return f"<{type(self).__name__} {self.job_id} in {self.store.label} {state}>"

    # -- what each store supplies -------------------------------------------------

    @abstractmethod
    async def _inbox_rows(
        self, after: int, done: list[int], limit: int
    ) -> list[tuple[Any, ...]]:
        """Delete the inbox items ``done``; then up to ``limit`` items numbered
        after ``after``: ``(seq, kind, target, data, error)``, by ``seq``."""

    @abstractmethod
    async def _adopt(self, epoch: int) -> int:
        """Check that this store still holds the job at ``epoch`` (else raise
        :class:`~duron.LeaseLostError`); the log's next sequence number."""

    @abstractmethod
    async def _take(self) -> tuple[int, int]:
        """Take the job's lease (creating its row if missing; raise
        :class:`~duron.LogLockedError` if another owner's lease is live): the new
        epoch and the log's next sequence number."""

    @abstractmethod
    async def _renew(self, epoch: int) -> None:
        """Extend the lease of ``epoch`` by a full lease from now, if it is still
        this writer's (else raise :class:`~duron.LeaseLostError`, saying why)."""

    @abstractmethod
    async def _unlease(
        self, epoch: int, *, wrote: bool, suspension: Suspension | None = None
    ) -> None:
        """Give the lease of ``epoch`` back and remove the row of a log opened but
        never written. A running job becomes pending; with ``suspension``,
        suspended, unless input it has not taken or a cancel request waits."""

    @abstractmethod
    async def _continue(
        self,
        epoch: int,
        start: int,
        entries: Sequence[bytes],
        first: bytes,
        inbox_done: list[int],
    ) -> None:
        """In one transaction, if the job's epoch is still ``epoch`` (else raise
        :class:`~duron.LeaseLostError`): write ``entries`` from ``start`` on, move
        the current run's entries to the next archived run's numbers
        (:func:`archived_seq`), write ``first`` at 0 and delete the inbox items
        ``inbox_done``."""

    @abstractmethod
    async def _write(
        self,
        epoch: int,
        start: int,
        entries: Sequence[bytes],
        started: Started | None,
        ending: Ending | None,
    ) -> None:
        """Write ``entries`` from sequence number ``start`` on, and what they set
        on the job, if its epoch is still ``epoch`` (else raise
        :class:`~duron.LeaseLostError`)."""
