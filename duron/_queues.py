"""Queues: where a submitted job waits, and the limits a store enforces on them.

A job goes into a queue at ``store.submit(fn.options(queue="emails"), ...)``
(``"default"`` without one); workers serve a set of queues
(``Worker(queues=...)``, every queue by default). A queue may have limits, kept
by the store itself (``store.set_queue(Queue(...))``), so that they hold across
every worker process and machine on that store:

* ``concurrency``: at most this many of its jobs run at once (status
  ``running``; a suspended job holds no slot);
* ``rate_limit``: at most ``starts`` of its jobs start (are claimed for the first
  time) within any ``per`` seconds.

A claim counts, and takes, inside one transaction that no other claim of the
same queue runs beside (SQLite: its single writer; PostgreSQL: a lock per queue
held until the claim commits), so no race between workers goes past a limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from duron._errors import UsageError
from duron._options import QUEUE_NAME_RULE, is_queue_name

__all__ = ["Queue", "RateLimit", "check_queue_names"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``starts`` jobs of a queue start within any ``per`` seconds.

    Args:
        starts: How many first starts the window allows (at least 1).
        per: The window: seconds (> 0) or a timedelta.

    Raises:
        UsageError: A bad value, naming it.
    """

    starts: int
    per: float

    def __init__(self, starts: int, per: float | timedelta) -> None:
        if type(starts) is not int or starts < 1:
            raise UsageError(
                f"RateLimit(starts=...) takes a whole number >= 1, not {starts!r}"
            )
        seconds: object = per.total_seconds() if isinstance(per, timedelta) else per
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise UsageError(
                f"RateLimit(per=...) takes seconds > 0 or a timedelta, not {per!r}"
            )
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "per", float(seconds))

    def __str__(self) -> str:
        return f"{self.starts}/{self.per:g}s"


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue and the limits its store enforces across all workers.

    Example:
        ```python
        await store.set_queue(
            duron.Queue("emails", concurrency=4, rate_limit=duron.RateLimit(10, per=1))
        )
        ```

    Args:
        name: The queue's name (what ``fn.options(queue=...)`` names).
        concurrency: At most this many of its jobs run at once, on all workers
            together (``None``: no limit).
        rate_limit: At most so many of its jobs start within a period
            (``None``: no limit).

    Raises:
        UsageError: A bad value, naming it.
    """

    name: str
    concurrency: int | None = None
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if not is_queue_name(self.name):
            raise UsageError(f"a queue name is {QUEUE_NAME_RULE}, not {self.name!r}")
        c = self.concurrency
        if c is not None and (type(c) is not int or c < 1):
            raise UsageError(
                f"Queue(concurrency=...) takes a whole number >= 1 or None, not {c!r}"
            )
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise UsageError(
                "Queue(rate_limit=...) takes a duron.RateLimit(starts, per) or "
                f"None, not {self.rate_limit!r}"
            )

    @property
    def limited(self) -> bool:
        """Whether the queue has a limit."""
        return self.concurrency is not None or self.rate_limit is not None

    def __str__(self) -> str:
        limits = []
        if self.concurrency is not None:
            limits.append(f"concurrency {self.concurrency}")
        if self.rate_limit is not None:
            limits.append(f"rate {self.rate_limit}")
        return f"{self.name} ({', '.join(limits) or 'no limits'})"


def check_queue_names(queues: object, what: str = "queues") -> tuple[str, ...]:
    """Queue names from names or :class:`Queue` objects (an iterable of them).

    Raises:
        UsageError: A string (not a list of names), or something else than a
            queue name or a :class:`Queue`.
    """
    if isinstance(queues, (str, Queue)):
        raise UsageError(
            f"{what} takes a list of queue names or duron.Queue objects, not "
            f"{queues!r}; write [{queues!r}]"
        )
    try:
        items = list(queues)  # type: ignore[call-overload]
    except TypeError:
        raise UsageError(
            f"{what} takes a list of queue names or duron.Queue objects, not {queues!r}"
        ) from None
    names: list[str] = []
    for item in items:
        name = item.name if isinstance(item, Queue) else item
        if not is_queue_name(name):
            raise UsageError(f"{what}: a queue name is {QUEUE_NAME_RULE}, not {item!r}")
        names.append(name)
    return tuple(dict.fromkeys(names))
