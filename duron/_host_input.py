"""What the host sends into a running job: input values, future results, cancellation.

Each arrives as an outcome queued for the driver's next write, and the call returns
once it is in the log (or raises, if the job ended first): durable code receives it
after it is recorded, at the same point on every replay. Values are validated,
encoded and measured against the log's size limit on the host's side first, so
that nothing unrecordable reaches the queue: the sender gets the error, and the
job goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from duron._codec import roundtrip
from duron._errors import PayloadTooLargeError, UsageError
from duron._limits import input_entry_size, limits_of
from duron._operations import Cancelled, Done, Emitted, Op, Outcome
from duron._recorded_errors import error_info

if TYPE_CHECKING:
    from duron._driver import Driver
    from duron._json import JSONValue

__all__ = ["HostInput"]


class HostInput:
    """The host's way into one run (``Job`` and its stream writers use it)."""

    __slots__ = ("_driver",)

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    async def wait_live(self) -> None:
        """Return once replay is over and host input can be recorded."""
        await self._driver.live.wait()
        if self._driver.ended:
            raise UsageError(
                f"job {self._driver.label} has ended; it takes no more input"
            )

    async def submit_input(
        self, name: str, data: JSONValue, error: BaseException | None, close: bool
    ) -> None:
        await self.wait_live()
        op = self._driver.inputs[name]
        if op.closed:
            raise UsageError(
                f"job {self._driver.label}: {name!r} is closed; it takes no more values"
            )
        sent_at = self._driver.clock()
        observe = self._driver.observe  # the run's, even if it ends meanwhile
        event: Done | Emitted
        if close:
            op.closed = True
            info = error_info(error) if error is not None else None
            event = Done(op, None, info, cause=error, ack=anyio.Event())
        else:
            self._check_size(op, data, f"value for {name!r}", emit=True)
            event = Emitted(op, data, ack=anyio.Event())
        await self._submit(event, f"the value for {name!r}")
        if observe is not None:
            count = int(op.state or 0)
            observe.input_recorded(name, op.id, count, sent_at, close, error)

    async def recorded_count(self, name: str) -> int:
        """How many values the log holds for host input ``name`` (after replay)."""
        await self._driver.live.wait()
        return int(self._driver.inputs[name].state or 0)

    def find_future(self, future_id: str) -> Op | None:
        """The pending future ``future_id``, if durable code still waits for it."""
        try:
            op = self._driver.engine.pending.get(int(future_id))
        except ValueError:
            return None
        if op is None or op.kind != "future" or op.fut.done() or op.closed:
            return None
        return op

    async def complete_future(
        self, future_id: str, result: Any, exception: BaseException | None
    ) -> None:
        await self.wait_live()
        op = self.find_future(future_id)
        if op is None:
            raise UsageError(
                f"job {self._driver.label}: no pending future {future_id!r} (unknown, already "
                "completed, or no longer awaited); check job.is_future_pending first"
            )
        if exception is not None:
            event = Done(op, None, error_info(exception), cause=exception)
        else:
            data, decoded = roundtrip(
                self._driver.codec,
                result,
                op.annotation,
                what=f"result for future {future_id!r} ({op.name})",
                job=self._driver.label,
            )
            what = f"result for future {future_id!r} ({op.name})"
            self._check_size(op, data, what, emit=False)
            event = Done(op, data, decoded=decoded)
        event.ack = anyio.Event()
        op.closed = True
        observe = self._driver.observe  # the run's, even if it ends meanwhile
        await self._submit(event, f"the result of future {future_id!r}")
        if observe is not None:
            observe.future_completed(op.name, op.id, op.issued_at, exception)

    def _check_size(self, op: Op, data: JSONValue, what: str, *, emit: bool) -> None:
        limit = limits_of(self._driver.storage).max_entry_size
        size = input_entry_size(op, data, emit=emit)
        if size > limit:
            raise PayloadTooLargeError(
                what=what, size=size, limit=limit, job=self._driver.label
            )

    async def cancel(self) -> None:
        await self.wait_live()
        await self._submit(Cancelled(ack=anyio.Event()), "the cancellation")

    async def _submit(self, event: Outcome, what: str) -> None:
        self._driver.push(event)
        await event.ack.wait()
        if event.recorded is None:
            raise UsageError(
                f"job {self._driver.label} stopped while {what} was being written: "
                "it may or may not be in the log; once the job runs again, "
                "writer.recorded() (or job.is_future_pending) says whether it is"
            )
        if not event.recorded:
            raise UsageError(
                f"job {self._driver.label} ended before {what} was recorded"
            )
