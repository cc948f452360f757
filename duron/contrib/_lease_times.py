"""When each lease a store object holds was last confirmed, on this process's clock.

A writer must not start an effect on a lease that may have run out: a process
stalled (SIGSTOP, a long GC pause, a suspended VM) past its lease may find, when it
wakes, that another worker took the job over; its writes are then refused, but an
effect it started would already have touched the world. The database's clock says
when a lease expires; this process can only know when it last confirmed one (a
claim, a take, a renewal that still found the row its own). A lease confirmed at
``t`` on the monotonic clock expires no earlier than ``t + lease``, since the
database set its expiry after ``t``. :meth:`LeaseTimes.fresh` asks for a margin
on top: a lease older than two thirds of its length (the renewer, every third of
it, fell behind) is confirmed with the database before the next effect starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

__all__ = ["FRESH_PART", "LeaseTimes"]

FRESH_PART = 2 / 3
"""The part of a lease after which it is confirmed again before an effect starts."""


class LeaseTimes:
    """Job id -> when this store object last confirmed its lease (monotonic)."""

    __slots__ = ("_at", "_fresh_for")

    def __init__(self, lease: float) -> None:
        self._at: dict[str, float] = {}
        self._fresh_for = lease * FRESH_PART

    def renewed(self, since: float, job_ids: Iterable[str]) -> None:
        """These leases were confirmed by a statement sent at ``since``."""
        at = self._at
        for job_id in job_ids:
            if at.get(job_id, since) <= since:
                at[job_id] = since

    def fresh(self, job_id: str) -> bool:
        """Whether the lease of ``job_id`` surely has a third of its length left."""
        at = self._at.get(job_id)
        return at is not None and time.monotonic() - at < self._fresh_for

    def forget(self, job_id: str) -> None:
        """The lease is no longer held (released, lost or failed)."""
        self._at.pop(job_id, None)

    def keep_only(self, job_ids: Iterable[str]) -> None:
        """Forget every lease but these (the ones still held)."""
        keep = set(job_ids)
        # list(): one copy under the GIL, while host tasks may add to the dict.
        for job_id in list(self._at):
            if job_id not in keep:
                self._at.pop(job_id, None)
