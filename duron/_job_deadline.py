"""A job's deadline: when it is cancelled if it has not ended.

Recorded in the job entry (``fn.options(deadline=...)``). The driver asks
:meth:`JobDeadline.due` whenever it would wait: once the host clock passes the
deadline, it gets the one :class:`~duron._operations.Cancelled` to record, which
reaches durable code the usual way. A log that already records a cancellation at
or after the deadline (the job was cancelled by it before a restart) asks for no
other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from duron._operations import Cancelled

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEADLINE_PASSED", "JobDeadline"]

DEADLINE_PASSED = "its deadline passed"
"""What a job's end says cancelled it."""


class JobDeadline:
    """One job's deadline (host clock, seconds since the epoch)."""

    __slots__ = ("_cancel", "at")

    def __init__(self, at: float | None) -> None:
        self.at: float | None = at  # None once its cancellation is recorded
        self._cancel: Cancelled | None = None

    def due(self, clock: Callable[[], float]) -> Cancelled | None:
        """The cancellation to record now, once, if the deadline passed."""
        at = self.at
        if at is None or clock() < at:
            return None
        self.at = None
        self._cancel = cancel = Cancelled()
        return cancel

    def delay(self, clock: Callable[[], float], timer: float | None) -> float | None:
        """Seconds to sleep at most (``None``: until woken): until ``timer`` (a
        time on ``clock``), or until the deadline if it comes first."""
        at = self.at
        if at is not None and (timer is None or at < timer):
            timer = at
        return None if timer is None else timer - clock()

    def caused(self, event: Cancelled) -> bool:
        """Whether ``event``, a cancellation being delivered, is the deadline's:
        queued by :meth:`due`, or read from the log at or after the deadline."""
        if event is self._cancel:
            return True
        at = self.at
        if at is not None and event.t >= at:
            self.at = None  # the log holds it: nothing more to record
            return True
        return False
