"""Which runnable jobs a claim takes, within the limits of their queues.

Both SQL stores claim the same way, inside one transaction that no other claim
of the same limited queue runs beside (SQLite: the single writer; PostgreSQL: a
transaction-level advisory lock per queue):

1. the limits of the queues (the ``queues`` table) are read;
2. jobs of queues without a limit are candidates as they come (highest
   priority, then oldest first);
3. for each limited queue: its running jobs and its recent first starts are
   counted, and its candidates taken in order while the limits allow
   (:func:`take`);
4. all of them, in priority order, cut to the number the worker has room for.

A job whose lease expired while it was ``running`` is counted as running until
it is claimed again, so taking it back needs no free slot: a crashed worker's
jobs resume even in a full queue, and never count twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from duron._queues import Queue, RateLimit

__all__ = [
    "RUNNABLE_SQLITE",
    "Candidate",
    "QueueLoad",
    "best",
    "queue_from_row",
    "take",
]

RUNNABLE_SQLITE = (
    "((status IN ('pending', 'running') AND (wake_at IS NULL OR wake_at <= :now)) "
    "OR (status = 'suspended' AND wake_at <= :now)) AND function IS NOT NULL "
    "AND (lease_expires IS NULL OR lease_expires < :now OR lease_owner = :owner) "
    "AND id NOT IN (SELECT value FROM json_each(:mine))"
)
"""SQLite: the jobs a claim may take (pending and due, suspended and due, or
running under a lease that ran out), not held by this store object."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A runnable job a claim may take."""

    id: str
    priority: int
    created: Any
    running: bool  # its lease ran out: it already holds a slot of its queue
    started: bool  # it started before: a rate limit does not count it again

    @property
    def order(self) -> tuple[int, Any, str]:
        return (-self.priority, self.created, self.id)


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """A limited queue as the claim found it."""

    queue: Queue
    running: int  # its jobs with status 'running'
    recent: int  # its first starts within the rate limit's period


def queue_from_row(row: Sequence[Any]) -> Queue:
    """A ``queues`` row ``(name, concurrency, rate_starts, rate_per)``."""
    name, concurrency, starts, per = row
    rate = None if starts is None or per is None else RateLimit(int(starts), per)
    return Queue(name, None if concurrency is None else int(concurrency), rate)


def take(load: QueueLoad, candidates: Iterable[Candidate]) -> list[Candidate]:
    """The candidates of one limited queue its limits let start now, in order."""
    q = load.queue
    slots = None if q.concurrency is None else q.concurrency - load.running
    starts = None if q.rate_limit is None else q.rate_limit.starts - load.recent
    taken: list[Candidate] = []
    for c in candidates:
        if c.running:
            taken.append(c)
            continue
        if slots is not None and slots <= 0:
            continue
        if not c.started and starts is not None:
            if starts <= 0:
                continue
            starts -= 1
        if slots is not None:
            slots -= 1
        taken.append(c)
    return taken


def best(candidates: Iterable[Candidate], limit: int) -> list[Candidate]:
    """The first ``limit`` candidates by priority, then age."""
    return sorted(candidates, key=lambda c: c.order)[:limit]
