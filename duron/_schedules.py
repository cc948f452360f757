"""Schedules: a durable function started on a cron expression, by the workers.

A schedule lives in the job store (``store.add_schedule(...)``, ``duron schedules
add``), with the call it makes and the time of its next tick. Every worker that
has the schedule's function looks for due schedules (a cheap read, about four
times a second); starting a tick is one transaction that moves the schedule's
next tick on only if it still is the one the worker read (the others' tries
change nothing) and submits the tick's job, whose id names the schedule and the
tick (``nightly@2026-05-01T03:00:00Z``): across any number of workers and
restarts, a tick starts one job.

Ticks missed while no worker ran (all stopped, a deploy, an outage) follow the
schedule's ``missed`` policy:

* ``"latest"`` (the default): the latest missed tick runs, once; the older
  ones are dropped;
* ``"skip"``: a tick runs only if a worker sees it within ``grace`` seconds of
  its time; missed ones are dropped.

Cron expressions are parsed and stepped by `cronsim` (the ``schedules`` extra):
five fields (minute hour day month weekday), or six with seconds first; the time
zone (an IANA name) decides when "3 AM" is, daylight saving included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from duron._errors import UsageError
from duron._json import JSONValue
from duron._options import is_job_id

__all__ = [
    "Missed",
    "Schedule",
    "ScheduleInfo",
    "due_tick",
    "next_tick",
    "tick_job_id",
]

Missed = Literal["latest", "skip"]
"""What happens to ticks missed while no worker ran (see :class:`Schedule`)."""

_INSTALL = "schedules need cronsim: pip install 'duron[schedules]'"
_NAME_RULE = "a non-empty string of at most 200 characters without '@'"


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return cronsim


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"Schedule(timezone=...) takes an IANA time zone name such as "
            f"'Europe/Paris' or 'UTC', not {name!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a schedule starts its function: a cron expression in a time zone.

    Example:
        ```python
        nightly = duron.Schedule("nightly-report", "0 3 * * *", timezone="Europe/Paris")
        await store.add_schedule(nightly, report, "sales")
        ```

    Args:
        name: The schedule's name (its ticks' job ids start with it).
        cron: A cron expression: ``minute hour day month weekday``, or six
            fields with seconds first (``"*/10 * * * * *"``: every ten seconds).
        timezone: The IANA time zone the expression is read in (default UTC).
        missed: What happens to ticks missed while no worker ran: ``"latest"``
            runs the latest one once, ``"skip"`` runs none.
        grace: ``missed="skip"``: seconds after its time a tick still runs.

    Raises:
        UsageError: A bad value (the message names it), or a cron expression
            that does not parse.
        ImportError: cronsim is not installed (``pip install 'duron[schedules]'``).
    """

    name: str
    cron: str
    timezone: str = "UTC"
    missed: Missed = "latest"
    grace: float = 60.0

    def __post_init__(self) -> None:
        name = self.name
        if not (is_job_id(name) and len(name) <= 200 and "@" not in name):
            raise UsageError(f"a schedule name is {_NAME_RULE}, not {name!r}")
        if self.missed not in ("latest", "skip"):
            raise UsageError(
                f"Schedule(missed=...) takes 'latest' or 'skip', not {self.missed!r}"
            )
        g: object = self.grace
        if not isinstance(g, (int, float)) or isinstance(g, bool) or not g >= 0:
            raise UsageError(
                f"Schedule(grace=...) takes seconds >= 0, not {self.grace!r}"
            )
        if not isinstance(self.timezone, str):
            raise UsageError(
                f"Schedule(timezone=...) takes an IANA time zone name, "
                f"not {self.timezone!r}"
            )
        _zone(self.timezone)
        if not isinstance(self.cron, str):
            raise UsageError(f"Schedule(cron=...) takes a string, not {self.cron!r}")
        cronsim = _cronsim()
        try:
            cronsim.CronSim(self.cron, datetime.now(timezone.utc))
        except cronsim.CronSimError as exc:
            raise UsageError(
                f"schedule {name!r}: {self.cron!r} is not a cron expression ({exc})"
            ) from None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as its store keeps it (a snapshot).

    Attributes:
        schedule: Its name, cron expression, time zone and missed-tick policy.
        function: The durable function its ticks start.
        args: The encoded arguments of each tick's call.
        queue: The queue its jobs go to.
        priority: Their priority in it.
        paused: Whether its ticks are skipped for now.
        next_at: When its next tick is due.
        last_tick: Its latest tick that started a job (``None``: none yet).
    """

    schedule: Schedule
    function: str
    args: dict[str, JSONValue]
    queue: str
    priority: int
    paused: bool
    next_at: datetime
    last_tick: datetime | None

    def __str__(self) -> str:
        s = self.schedule
        state = "paused" if self.paused else f"next {_iso(self.next_at)}"
        return (
            f"{s.name} {s.cron!r} {s.timezone} {self.function} queue={self.queue} "
            f"missed={s.missed} ({state})"
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_tick(schedule: Schedule, after: float) -> float:
    """The schedule's first tick strictly after ``after`` (seconds since the
    epoch), as seconds since the epoch."""
    start = datetime.fromtimestamp(math.floor(after), _zone(schedule.timezone))
    for tick in _cronsim().CronSim(schedule.cron, start):
        t: float = tick.timestamp()
        if t > after:
            return t
    raise AssertionError("unreachable: cron iteration never ends")  # pragma: no cover


def due_tick(
    schedule: Schedule, next_at: float, now: float
) -> tuple[float | None, float]:
    """Which tick to start now, if any, and the schedule's next tick after it.

    Args:
        schedule: The schedule.
        next_at: Its next tick as the store holds it (the oldest not handled).
        now: The time now.

    Returns:
        ``(tick, new_next_at)``: the tick to start (``None``: none is due, or
        the due ones were missed and the policy drops them) and the first tick
        after ``now``.
    """
    if next_at > now:
        return None, next_at
    # The latest tick at or before now (a reverse walk from just after now).
    end = datetime.fromtimestamp(now, _zone(schedule.timezone)).replace(microsecond=0)
    latest = next_at
    for tick in _cronsim().CronSim(
        schedule.cron, end.replace(microsecond=1), reverse=True
    ):
        latest = max(tick.timestamp(), next_at)
        break
    if schedule.missed == "skip" and now - latest > schedule.grace:
        return None, next_tick(schedule, now)
    return latest, next_tick(schedule, now)


def tick_job_id(name: str, tick: float) -> str:
    """The id of the job a schedule's tick starts: ``NAME@2026-05-01T03:00:00Z``."""
    moment = datetime.fromtimestamp(tick, timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return f"{name}@{text}Z"
