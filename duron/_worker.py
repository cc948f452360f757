"""``Worker``: runs a job store's jobs, up to a concurrency limit, and resumes them.

The worker claims runnable jobs (new ones, ones stopped at a safe point, ones whose
process died and whose lease expired), runs each with ``fn.invoke(store.log(id))``
and ``job.resume()``, and asks the store regularly which of its jobs were asked to
cancel or were taken over by another owner. Leaving the ``async with`` block stops
every job at a safe point; their leases are released so that they resume at once
elsewhere, or here on the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from duron._errors import DuronError, LeaseLostError, UnknownFunctionError, UsageError
from duron._job import Job
from duron._jobstore import Claim

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup

    from duron._durable import DurableFn
    from duron._jobstore import JobStore

__all__ = ["Worker"]

_log = logging.getLogger("duron")


@dataclass(eq=False)
class _Slot:
    claim: Claim
    job: Job[..., Any] | None = None
    scope: anyio.CancelScope | None = None
    stopping: bool = False
    cancel_wanted: bool = False
    cancel_sent: bool = False
    lost: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    previous: _Slot | None = None  # an older run of the same job, stopping

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

    Every process that runs jobs of a store should give its worker every durable
    function the store's jobs use: a job naming a function the worker does not
    know is marked failed (:class:`~duron.UnknownFunctionError`) and waits for
    ``store.requeue()``.

    Args:
        store: A job store (:class:`~duron.contrib.storage.SQLiteStore`, ...).
        functions: The ``@duron.durable`` functions this worker runs.
        concurrency: How many jobs run at once at most.
        poll_interval: Seconds between looks for work submitted by other processes
            (work submitted through the same store object wakes it at once).
        heartbeat_interval: Seconds between checks for cancel requests and lost
            leases of the running jobs (default: ``min(1, lease / 3)``).
    """

    def __init__(
        self,
        store: JobStore,
        functions: Iterable[DurableFn[..., Any]],
        *,
        concurrency: int = 32,
        poll_interval: float = 0.5,
        heartbeat_interval: float | None = None,
    ) -> None:
        from duron._durable import DurableFn

        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency!r}")
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
        self.heartbeat_interval: float = (
            heartbeat_interval
            if heartbeat_interval is not None
            else min(1.0, store.lease / 3)
        )
        self._slots: dict[str, _Slot] = {}
        self._tg: TaskGroup | None = None
        self._state = "new"
        self.ended: int = 0
        """How many jobs this worker ran to their end (any outcome)."""

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
        return None

    async def stop(self) -> None:
        """Stop every job at a safe point, release their leases and return."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._state = "stopping"
        self._loop_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._loop_done.wait()
            for slot in self._slots.values():
                slot.stopping = True
                slot.interrupt()
            for slot in list(self._slots.values()):
                await slot.done.wait()
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)
        self._state = "stopped"

    # -- the loop ---------------------------------------------------------------------

    async def _watch(self) -> None:
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
                    except DuronError:
                        _log.exception("duron worker: the store failed; retrying")
                    with anyio.move_on_after(self.heartbeat_interval):
                        await self._wake.wait()
        finally:
            self._loop_done.set()

    async def _tick(self) -> None:
        store = self.store
        slots = self._slots
        if slots:
            beat = await store.heartbeat(list(slots))
            for job_id in beat.lost:
                slot = slots.get(job_id)
                if slot is not None and not slot.lost:
                    _log.warning(
                        "duron worker: lost the lease on job %s; stopping it here",
                        job_id,
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
        tg = self._tg
        assert tg is not None
        # Claimed jobs must get their slot (and so their release) even if the
        # worker is stopping meanwhile.
        with anyio.CancelScope(shield=True):
            claims = await store.claim(free)
        for claim in claims:
            slot = _Slot(claim, cancel_wanted=claim.cancel_requested)
            older = slots.get(claim.job_id)
            if older is not None:
                # The store gave back a job this worker still runs: the claim
                # moved the epoch on, so the older run can no longer write. It
                # stops; the new claim runs the job once it has.
                _log.warning(
                    "duron worker: claimed job %s again while running it (its "
                    "lease ran out meanwhile); stopping the older run",
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
                error = UnknownFunctionError(
                    job=job_id,
                    function=claim.function,
                    known=tuple(sorted(self.functions)),
                )
                _log.error("duron worker: %s", error)
                await self.store.fail(job_id, claim.epoch, error)
                return
            try:
                await self._drive(slot, fn)
            except Exception as exc:  # opening or closing the job failed
                await self._failed(slot, exc)
        except Exception:
            _log.exception("duron worker: job %s: could not record its failure", job_id)
        finally:
            if self._slots.get(job_id) is slot:
                del self._slots[job_id]
            slot.done.set()
            self._wake.set()

    async def _drive(self, slot: _Slot, fn: DurableFn[..., Any]) -> None:
        """Run the job until it ends or the worker stops it."""
        async with fn.invoke(self.store.log(slot.claim.job_id)) as job:
            slot.job = job
            try:
                await job.resume()
                await self._wait(slot, job)
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
                except Exception:
                    self.ended += 1
                    raise
            slot.scope = None
            if not scope.cancelled_caught:
                self.ended += 1
                return
            if slot.stopping:
                return

    async def _failed(self, slot: _Slot, error: Exception) -> None:
        claim = slot.claim
        if isinstance(error, LeaseLostError):
            _log.warning("duron worker: %s", error)
            return  # another owner runs the job now
        _log.info("duron worker: job %s failed: %r", claim.job_id, error)
        # A no-op when the job's log recorded this end itself (its status is set),
        # or when another owner took the job over (the epoch moved on).
        await self.store.fail(claim.job_id, claim.epoch, error)

    def __repr__(self) -> str:
        return (
            f"<Worker {self._state} running={len(self._slots)}/{self.concurrency} "
            f"store={getattr(self.store, 'label', self.store)!r}>"
        )
