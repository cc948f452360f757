"""Outages of a store: noticed once, logged once, waited out with backoff.

A store that cannot be reached (a database restarting, a disk full) is a passing
state, not a failure of the jobs that met it. :class:`Outage` is where everyone
who talks to one store object reports what they found, so that an outage is
logged once when it starts and once when it ends; :func:`backoff` spaces the
tries while it lasts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duron._errors import StorageError

__all__ = ["Outage", "backoff"]

_log = logging.getLogger("duron")


class Outage:
    """Whether a store is reachable, as its users last found it.

    Everyone who talks to one store object reports here: the store's own thread
    when a connection or a commit fails or succeeds, a worker when its polls do.
    An outage is logged once when it starts (a WARNING naming what failed, without
    a traceback) and once when it ends (with its duration), however many
    operations fail in between. Thread-safe.

    Attributes:
        store: How the log lines name the store (``"SQLite store jobs.db"``).
        since: When the current outage began (``time.monotonic()``), or ``None``.
        error: What failed first in the current (or the last) outage.
        count: How many outages began so far.
    """

    def __init__(self, store: str) -> None:
        self.store = store
        self.since: float | None = None
        self.error: StorageError | None = None
        self.count: int = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether the store is unavailable now (as last seen)."""
        return self.since is not None

    def failed(self, error: StorageError) -> None:
        """An operation failed because the store is unavailable."""
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
            self.error = error
            self.count += 1
        of = f" of job {error.job}" if error.job is not None else ""
        _log.warning(
            "duron: %s is unavailable (%s%s failed: %s); retrying with backoff, "
            "jobs stop at a safe point and resume from their logs once it is back",
            self.store,
            error.operation,
            of,
            error.detail,
        )

    def recovered(self) -> None:
        """An operation succeeded: the store answers."""
        if self.since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            _log.info(
                "duron: %s is reachable again after %.1f s",
                self.store,
                time.monotonic() - since,
            )


def backoff(attempt: int, first: float, cap: float) -> float:
    """Seconds to wait before try ``attempt`` (1 for the first retry): doubling
    from ``first`` up to ``cap``, half of it random (jitter), so that many
    clients that lost the same server do not come back in step."""
    delay = min(cap, first * 2.0 ** min(attempt - 1, 30))
    return delay / 2 + random.uniform(0, delay / 2)
