"""``Worker``: runs a job store's jobs, up to a concurrency limit, and resumes them.

The worker claims runnable jobs (new ones, ones stopped at a safe point, ones whose
process died and whose lease expired), runs each with ``fn.invoke(store.log(id))``
and ``job.resume()``, and asks the store regularly which of its jobs were asked to
cancel or were taken over by another owner. Leaving the ``async with`` block stops
every job at a safe point; their leases are released so that they resume at once
elsewhere, or here on the next start.

A store that cannot be reached (:class:`~duron.StoreUnavailableError`: a database
restarting or failing over, a locked or full SQLite file) is never a reason to fail
a job: a job that cannot append, read or keep its lease stops at a safe point
without recording anything, and is claimed again once the store answers, by this
worker or another; its log replays what was committed. The worker's polls back off
with jitter meanwhile, and the outage is logged once when it starts and once when
it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from duron._errors import (
    DuronError,
    JobCancelledError,
    LeaseLostError,
    StorageError,
    StoreUnavailableError,
    UnknownFunctionError,
    UsageError,
)
from duron._inbox_feed import inbox_source
from duron._job import Job
from duron._jobstore import Claim
from duron._outage import Outage, backoff

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup

    from duron._durable import DurableFn
    from duron._jobstore import JobStore

__all__ = ["Worker"]

_log = logging.getLogger("duron.worker")

BACKOFF_FIRST = 0.1
"""Seconds a worker waits after its first failed poll of a store."""
BACKOFF_CAP = 5.0
"""The longest a worker waits between two polls of a store that fails."""


@dataclass(eq=False)
class _Slot:
    claim: Claim
    job: Job[..., Any] | None = None
    scope: anyio.CancelScope | None = None
    stopping: bool = False
    cancel_wanted: bool = False
    cancel_sent: bool = False
    lost: bool = False
    finished: bool = False  # the job's outcome is known (job.wait() returned/raised)
    interrupted: bool = False  # stopped because the store was unavailable
    told: bool = False  # its end (or why it stopped) was logged
    done: anyio.Event = field(default_factory=anyio.Event)
    previous: _Slot | None = None  # an older run of the same job, stopping
    suspended: bool = False  # stopped while it waited on durable things only

    def interrupt(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


class Worker:
    """Runs the jobs of a job store: submitted ones, and unfinished ones on start.

    Example:
        ```python
        store = SQLiteStore("jobs.db")
        async with duron.Worker(store, [checkout, refund], concurrency=32):
            await anyio.sleep_forever()  # or serve requests meanwhile
        ```

    A worker claims only jobs of the durable functions it was given: workers
    with different functions share one store, each running its own kinds of
    job, and during a rolling deploy the workers that do not have a new
    function yet leave its jobs pending for the ones that do. A job whose
    function no running worker has waits, pending (``duron jobs list`` says
    so), and is never failed for it.

    While the store cannot be reached, jobs that need it stop at a safe point
    without being marked failed and resume once it is back (see the module
    docstring and the service guide's "When the database goes away").

    Args:
        store: A job store (:class:`~duron.contrib.storage.SQLiteStore`, ...).
        functions: The ``@duron.durable`` functions this worker runs.
        concurrency: How many jobs run at once at most.
        poll_interval: Seconds between looks for work submitted by other processes
            (work submitted through the same store object wakes it at once).
        heartbeat_interval: Seconds between checks for cancel requests and lost
            leases of the running jobs (default: ``min(1, lease / 3)``).
        suspend_after: Seconds a job may wait only on durable things (a timer, a
            future, a stream or signal, a child job) before the worker suspends
            it: stops it there and gives its slot back; the store runs it again
            when its timer is due or input arrives. ``None``: never. A timer due
            sooner than this is waited for in place.
    """

    def __init__(
        self,
        store: JobStore,
        functions: Iterable[DurableFn[..., Any]],
        *,
        concurrency: int = 32,
        poll_interval: float = 0.5,
        heartbeat_interval: float | None = None,
        suspend_after: float | None = 5.0,
    ) -> None:
        from duron._durable import DurableFn

        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency!r}")
        if suspend_after is not None and not suspend_after >= 0:
            raise UsageError(
                "suspend_after must be a number of seconds >= 0 or None, not "
                f"{suspend_after!r}"
            )
        fns: dict[str, DurableFn[..., Any]] = {}
        for fn in functions:
            if not isinstance(fn, DurableFn):
                raise UsageError(
                    f"Worker runs @duron.durable functions, not {fn!r}; decorate it "
                    "with @duron.durable"
                )
            other = fns.get(fn.name)
            if other is not None and other.fn is not fn.fn:  # fn.options() is fn
                raise UsageError(
                    f"two durable functions are named {fn.name}; give one another "
                    "name with @duron.durable(name=...)"
                )
            fns[fn.name] = fn
        self.store = store
        self.functions = fns
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.suspend_after = suspend_after
        self.heartbeat_interval: float = (
            heartbeat_interval
            if heartbeat_interval is not None
            else min(1.0, store.lease / 3)
        )
        self._names = tuple(sorted(fns))
        self._slots: dict[str, _Slot] = {}
        self._tg: TaskGroup | None = None
        self._state = "new"
        outage = getattr(store, "outage", None)
        # A store that keeps its own (the SQL stores) says itself when it is back:
        # a poll that only read proves little (a locked SQLite file reads fine).
        self._own_outage = not isinstance(outage, Outage)
        self.outage: Outage = (
            outage
            if isinstance(outage, Outage)
            else Outage(f"store {getattr(store, 'label', store)}")
        )
        """Whether the store answers, as this worker (and the store) last found it."""
        self._failed_polls = 0
        self._poll_error = ""
        self._interruptions = 0  # runs stopped by the store since a job ended
        self._claim_after = 0.0  # no claims before then (anyio.current_time())
        self._job_ended: anyio.Event | None = None  # what wait_idle() waits on
        self.ended: int = 0
        """How many jobs this worker ran to their end (any outcome)."""
        self.suspended: int = 0
        """How many times this worker suspended a job waiting on durable things."""
        self.interrupted: int = 0
        """How many runs of jobs this worker stopped because the store was
        unavailable (each job resumes, here or elsewhere, once it is back)."""

    @property
    def running(self) -> list[str]:
        """Ids of the jobs this worker runs now."""
        return list(self._slots)

    async def __aenter__(self) -> Worker:
        if self._state != "new":
            raise UsageError("a Worker is started once; create a new one")
        self._state = "running"
        self._wake = anyio.Event()
        self._loop_scope = anyio.CancelScope()
        self._loop_done = anyio.Event()
        self._watch_scope = anyio.CancelScope()
        self._stopped: anyio.Event | None = None
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._loop, name="duron worker")
        tg.start_soon(self._watch, name="duron worker: wait for work")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.stop()
        tg, self._tg = self._tg, None
        if tg is not None:  # only the task that entered the block leaves it
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        return None

    async def stop(self) -> None:
        """Stop every job at a safe point, release their leases and return.

        Any task may call it (a signal handler, a shutdown endpoint); the
        worker's task group is left by the task that entered ``async with``, when
        it leaves the block.
        """
        if self._state == "new":
            self._state = "stopped"
            return
        if self._stopped is not None:
            await self._stopped.wait()
            return
        self._stopped = stopped = anyio.Event()
        self._state = "stopping"
        self._loop_scope.cancel()
        self._watch_scope.cancel()
        try:
            with anyio.CancelScope(shield=True):
                await self._loop_done.wait()
                for slot in self._slots.values():
                    slot.stopping = True
                    slot.interrupt()
                for slot in list(self._slots.values()):
                    await slot.done.wait()
        finally:
            self._state = "stopped"
            stopped.set()

    async def wait_idle(self) -> None:
        """Return once this worker runs no job and the store holds none it could
        run: no job of its functions is pending, suspended until a timer, or
        running anywhere (a job running on another process may come back here if
        that process dies). A job suspended waiting for input alone is not work
        this worker can do until the input arrives.

        For tests and batch scripts: submit, then ``await worker.wait_idle()``.

        Example:
            ```python
            async with duron.Worker(store, [checkout]) as worker:
                for order in orders:
                    await store.submit(checkout, order)
                await worker.wait_idle()
            ```

        Raises:
            UsageError: The worker is not running (outside ``async with``).
        """
        while True:
            if self._state != "running":
                raise UsageError(
                    "wait_idle() needs a running worker: call it inside "
                    "`async with Worker(...)`"
                )
            # The slots are looked at again after the store answered: a claim
            # may have landed meanwhile.
            if not self._slots and not await self._store_has_work() and not self._slots:
                return
            self._job_ended = ended = anyio.Event()
            with anyio.move_on_after(self.poll_interval):
                await ended.wait()

    async def _store_has_work(self) -> bool:
        """Whether a job of this worker's functions is pending or running."""
        jobs = await self.store.list_jobs(["pending", "running", "suspended"])
        return any(
            info.function in self.functions
            and (info.status != "suspended" or info.wake_at is not None)
            for info in jobs
        )

    # -- the loop ---------------------------------------------------------------------

    async def _watch(self) -> None:
        with self._watch_scope:
            while True:
                await self.store.wait_for_work(self.poll_interval)
                self._wake.set()

    async def _loop(self) -> None:
        try:
            with self._loop_scope:
                while True:
                    self._wake = anyio.Event()
                    try:
                        await self._tick()
                    except DuronError as exc:
                        await self._back_off(exc)
                        continue
                    self._failed_polls = 0
                    self._poll_error = ""
                    if self._own_outage:
                        self.outage.recovered()
                    with anyio.move_on_after(self.heartbeat_interval):
                        await self._wake.wait()
        finally:
            self._loop_done.set()

    async def _back_off(self, error: DuronError) -> None:
        """A poll failed: say so once, then wait longer after each failure."""
        self._failed_polls += 1
        if isinstance(error, StoreUnavailableError):
            self.outage.failed(error)  # logged once per outage
        elif str(error) != self._poll_error:
            # A refusal is not an outage; still one line per distinct error, not
            # one per poll, and a traceback only for what is not the store's.
            self._poll_error = str(error)
            _log.error(
                "duron worker: polling the store failed: %s; retrying with backoff",
                error,
                exc_info=not isinstance(error, StorageError),
            )
        await anyio.sleep(backoff(self._failed_polls, BACKOFF_FIRST, BACKOFF_CAP))

    async def _tick(self) -> None:
        store = self.store
        slots = self._slots
        if slots:
            beat = await store.heartbeat(list(slots))
            for job_id in beat.lost:
                slot = slots.get(job_id)
                if slot is not None and not slot.lost:
                    _info(
                        slot.claim,
                        "duron worker: lost the lease on %s (another owner took it "
                        "over); stopping it here without writing",
                    )
                    slot.lost = True
                    slot.stopping = True
                    slot.interrupt()
            for job_id in beat.cancel:
                slot = slots.get(job_id)
                if slot is not None and not slot.cancel_wanted:
                    slot.cancel_wanted = True
                    slot.interrupt()
        free = self.concurrency - len(slots)
        if free <= 0 or self._state != "running":
            return
        if anyio.current_time() < self._claim_after:
            # A job just stopped because the store could not take its writes:
            # claiming it (or another) again at once may only stop it again
            # (a full disk still takes the claim's small write).
            return
        tg = self._tg
        assert tg is not None
        # Claimed jobs must get their slot (and so their release) even if the
        # worker is stopping meanwhile.
        with anyio.CancelScope(shield=True):
            claims = await store.claim(free, functions=self._names)
        for claim in claims:
            _info(claim, "duron worker: claimed %s")
            slot = _Slot(claim, cancel_wanted=claim.cancel_requested)
            older = slots.get(claim.job_id)
            if older is not None:
                # The store gave back a job this worker still runs (its lease
                # ran out meanwhile, or it is stopping and could not give its
                # lease back): the claim moved the epoch on, so the older run
                # can no longer write. It stops; the new claim runs the job
                # once it has. A job suspended here and woken at once (input
                # arrived as it was released) is claimed again as a matter of
                # course.
                (_log.debug if older.suspended else _log.warning)(
                    "duron worker: claimed job %s again while an older run of it "
                    "was still here; stopping the older run",
                    claim.job_id,
                )
                older.lost = older.stopping = True
                older.interrupt()
                slot.previous = older
            slots[claim.job_id] = slot
            tg.start_soon(self._run, slot, name=f"duron worker job {claim.job_id}")

    # -- one job ------------------------------------------------------------------------

    async def _run(self, slot: _Slot) -> None:
        claim = slot.claim
        job_id = claim.job_id
        try:
            if slot.previous is not None:
                await slot.previous.done.wait()
                slot.previous = None
            fn = self.functions.get(claim.function)
            if fn is None:
                # Only a store that ignores claim(functions=...) gets here: the
                # job cannot run here nor be handed back, so it fails loudly
                # (store.requeue() runs it again) rather than being claimed in
                # a loop.
                error = UnknownFunctionError(
                    job=job_id,
                    function=claim.function,
                    known=tuple(sorted(self.functions)),
                )
                _log.error("duron worker: %s", error, extra=_fields(claim))
                await self._record_failure(claim, error)
                return
            try:
                await self._drive(slot, fn)
            except Exception as exc:  # opening or closing the job failed
                await self._failed(slot, exc)
            if slot.stopping and not (slot.told or slot.lost or slot.interrupted):
                _info(
                    claim,
                    "duron worker: stopped %s at a safe point (the worker is "
                    "stopping); it resumes from its log when a worker claims it",
                )
        except Exception:
            _log.exception("duron worker: job %s: could not record its failure", job_id)
        finally:
            if self._slots.get(job_id) is slot:
                del self._slots[job_id]
            slot.done.set()
            self._wake.set()
            if self._job_ended is not None:
                self._job_ended.set()

    async def _drive(self, slot: _Slot, fn: DurableFn[..., Any]) -> None:
        """Run the job until it ends or the worker stops it."""
        log = self.store.log(slot.claim.job_id)
        suspend_until = getattr(log, "suspend_until", None)
        if inbox_source(log) is not None:
            # store.cancel() put the request in the job's inbox: the run takes
            # it from there (as a run the seed way does), exactly once.
            slot.cancel_sent = True
        async with fn.invoke(log) as job:
            slot.job = job
            if slot.claim.epoch > 1:  # a worker took it before
                _info(slot.claim, "duron worker: resuming %s from its log")
            try:
                await job.resume()
                watch = anyio.CancelScope()
                if self.suspend_after is not None and suspend_until is not None:
                    tg = self._tg
                    assert tg is not None
                    tg.start_soon(
                        self._suspend_when_idle, slot, job, suspend_until, watch
                    )
                try:
                    await self._wait(slot, job)
                finally:
                    watch.cancel()
            except Exception as exc:
                # Recorded while this worker still holds the lease: the job is
                # never pending (claimable) in between.
                await self._failed(slot, exc)
            # Leaving the block stops an unfinished job at a safe point.

    async def _wait(self, slot: _Slot, job: Job[..., Any]) -> None:
        """Wait for the job's end, delivering cancel requests; return early when
        the worker stops it."""
        while True:
            if slot.cancel_wanted and not slot.cancel_sent:
                slot.cancel_sent = True
                try:
                    await job.cancel()
                except DuronError as exc:  # it ended meanwhile
                    _log.debug("duron worker: cancel %s: %s", job.id, exc)
            with anyio.CancelScope() as scope:
                slot.scope = scope
                if slot.stopping or (slot.cancel_wanted and not slot.cancel_sent):
                    scope.cancel()
                try:
                    await job.wait()
                except StoreUnavailableError:
                    raise  # not an end: the job resumes once the store is back
                except Exception:
                    slot.finished = True
                    self.ended += 1
                    raise
            slot.scope = None
            if not scope.cancelled_caught:
                slot.finished = True
                self.ended += 1
                self._interruptions = 0
                slot.told = True
                _info(slot.claim, "duron worker: %s completed")
                return
            if slot.stopping:
                return

    async def _suspend_when_idle(
        self,
        slot: _Slot,
        job: Job[..., Any],
        suspend_until: Callable[[float | None], None],
        scope: anyio.CancelScope,
    ) -> None:
        """Suspend the job once it has waited only on durable things for
        :attr:`suspend_after` seconds (not when its timer is due sooner)."""
        with scope:
            await self._watch_idle(slot, job, suspend_until)

    async def _watch_idle(
        self,
        slot: _Slot,
        job: Job[..., Any],
        suspend_until: Callable[[float | None], None],
    ) -> None:
        after = self.suspend_after
        assert after is not None
        while not slot.stopping:
            waiting = await job.wait_idle()
            if waiting is None:
                return
            now = anyio.current_time()
            due_in = None if waiting.until is None else waiting.until - time.time()
            if due_in is not None and due_in < after:
                await anyio.sleep(max(due_in, 0.0) + 0.01)  # let it fire here
                continue
            if now - waiting.since < after:
                await anyio.sleep(waiting.since + after - now)
                continue
            if job.suspend() is None:
                continue  # it woke up meanwhile
            # Nothing can start now: the job stops at its next safe point, and
            # its release tells the store what wakes it.
            suspend_until(waiting.until)
            slot.suspended = slot.stopping = True
            self.suspended += 1
            slot.told = True
            _info(
                slot.claim,
                "duron worker: %s suspended, waiting for %s",
                "input"
                if waiting.until is None
                else f"a timer due at {_utc(waiting.until)} or input",
            )
            slot.interrupt()
            return

    async def _failed(self, slot: _Slot, error: Exception) -> None:
        claim = slot.claim
        if isinstance(error, LeaseLostError):
            if not slot.lost:
                slot.lost = True
                _info(claim, "duron worker: lost the lease on %s: %s", error)
            return  # another owner runs the job now
        if isinstance(error, StoreUnavailableError):
            # Nothing is recorded: the job is not failed, it stopped at a safe
            # point and resumes from its log once the store answers.
            self.outage.failed(error)
            if slot.finished:
                _log.debug(
                    "duron worker: job %s ended; giving its lease back failed: %s",
                    claim.job_id,
                    error,
                )
            elif not slot.interrupted:
                slot.interrupted = True
                self.interrupted += 1
                self._interruptions += 1
                self._claim_after = anyio.current_time() + backoff(
                    self._interruptions, BACKOFF_FIRST, BACKOFF_CAP
                )
                _info(
                    claim,
                    "duron worker: stopped %s at a safe point (%s); it resumes "
                    "from its log once the store is back",
                    error,
                )
            return
        slot.told = True
        if isinstance(error, JobCancelledError):
            _info(claim, "duron worker: %s cancelled")
        else:
            _info(claim, "duron worker: %s failed: %s: %s", type(error).__name__, error)
        await self._record_failure(claim, error)

    async def _record_failure(self, claim: Claim, error: Exception) -> None:
        # A no-op when the job's log recorded this end itself (its status is set),
        # or when another owner took the job over (the epoch moved on).
        try:
            await self.store.fail(claim.job_id, claim.epoch, error)
        except StorageError as exc:
            if isinstance(exc, StoreUnavailableError):
                self.outage.failed(exc)
            # The job stays unfinished: it is claimed again (here once the store
            # is back, elsewhere once its lease runs out), meets the same
            # failure, and that one is recorded.
            _log.warning(
                "duron worker: job %s: could not record its failure (%s); it runs "
                "again later",
                claim.job_id,
                exc,
            )

    def __repr__(self) -> str:
        return (
            f"<Worker {self._state} running={len(self._slots)}/{self.concurrency} "
            f"store={getattr(self.store, 'label', self.store)!r}>"
        )


def _fields(claim: Claim) -> dict[str, object]:
    """A job's line's fields, for handlers that format records as data."""
    return {"job_id": claim.job_id, "function": claim.function, "epoch": claim.epoch}


def _info(claim: Claim, message: str, *args: object) -> None:
    """One INFO line about a job: the first ``%s`` of ``message`` names it as
    ``job ID (FUNCTION, epoch N)``, the others are ``args``."""
    if _log.isEnabledFor(logging.INFO):
        about = f"job {claim.job_id} ({claim.function}, epoch {claim.epoch})"
        _log.info(message, about, *args, extra=_fields(claim))


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")
