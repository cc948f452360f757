"""``duron jobs list`` and ``duron jobs count``: their filters, and why a job waits.

The filters are ``store.list_jobs()``'s, as options: ``--status`` and
``--function`` (repeatable), ``--id-prefix``, ``--created-after`` /
``--created-before`` / ``--updated-after`` / ``--updated-before`` (an ISO 8601
time, UTC unless it says otherwise, or a duration meaning that long ago).

A job that waits for a worker (pending, running under a lease that ran out, or
suspended with its timer due) gets a hint saying why, from what the store's job table shows of its function's workers
(``store.function_activity()``): workers do not register with the store, so the
hint says what their jobs show, not which workers are up.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from duron._jobstore import STATUSES

if TYPE_CHECKING:
    from duron._job_query import FunctionActivity
    from duron._jobstore import JobInfo, JobStore

__all__ = [
    "add_filters",
    "duration",
    "filters",
    "moment",
    "show_time",
    "waiting_hints",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TIMES = ("created_after", "created_before", "updated_after", "updated_before")


def duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``45s`` or seconds, as a timedelta (argparse type)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write 30d, 12h, 15m, 45s or seconds"
        )
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNITS[unit or "s"])


def moment(text: str) -> datetime:
    """An ISO 8601 time (UTC unless it names its offset) or a duration meaning that
    long ago, as an aware datetime (argparse type)."""
    try:
        return datetime.now(timezone.utc) - duration(text)
    except argparse.ArgumentTypeError:
        pass
    iso = text.strip()
    if iso.endswith(("Z", "z")):  # Python 3.10's fromisoformat wants +00:00
        iso = iso[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: write 2026-05-01, 2026-05-01T12:00:00Z, "
            "2026-05-01T14:00:00+02:00, or a duration meaning that long ago "
            "(30m, 12h, 7d)"
        ) from None
    return when if when.utcoffset() is not None else when.replace(tzinfo=timezone.utc)


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The options that choose jobs (``list_jobs`` / ``count_jobs`` filters)."""
    parser.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="only jobs with this status (repeat for several)",
    )
    parser.add_argument(
        "--function",
        action="append",
        metavar="NAME",
        help="only jobs of this durable function (repeat for several)",
    )
    parser.add_argument(
        "--id-prefix", metavar="PREFIX", help="only jobs whose id starts with this"
    )
    parser.add_argument(
        "--parent", metavar="JOB", help="only the child jobs this job started"
    )
    for name in _TIMES:
        field, _, side = name.partition("_")
        parser.add_argument(
            f"--{field}-{side}",
            dest=name,
            type=moment,
            metavar="TIME",
            help=f"only jobs {'last changed' if field == 'updated' else field} "
            f"{side} TIME: 2026-05-01T12:00:00Z (UTC unless an offset is given) "
            "or a duration meaning that long ago (30m, 12h, 7d)",
        )


def filters(args: argparse.Namespace) -> dict[str, Any]:
    """The ``list_jobs`` / ``count_jobs`` keyword arguments the options give."""
    out: dict[str, Any] = {
        "status": args.status,
        "function": args.function,
        "id_prefix": args.id_prefix,
        "parent": args.parent,
    }
    for name in _TIMES:
        out[name] = getattr(args, name)
    return out


def show_time(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lease_ran_out(info: JobInfo, now: datetime) -> bool:
    return (
        info.status == "running"
        and info.lease_expires is not None
        and info.lease_expires < now
    )


def _waits_for_a_worker(info: JobInfo, now: datetime) -> bool:
    if info.status == "suspended":  # until its timer, or input (which wakes it)
        return info.wake_at is not None and info.wake_at <= now
    return info.status == "pending" or _lease_ran_out(info, now)


def _hint(info: JobInfo, activity: FunctionActivity | None, now: datetime) -> str:
    fn = info.function
    if fn is None:
        return "its log holds no job entry yet (opened with store.log()); no worker runs it"
    lapsed = ""
    if _lease_ran_out(info, now):
        lapsed = (
            f"its lease ran out at {show_time(info.lease_expires)} (its worker "
            "died or stalled); "
        )
    if activity is not None and activity.running:
        jobs = "job" if activity.running == 1 else "jobs"
        return (
            f"{lapsed}{activity.running} {jobs} of {fn} running now: waits for a "
            f"free slot in a worker that has {fn}"
        )
    if activity is not None and activity.last_ran is not None:
        return (
            f"{lapsed}no job of {fn} is running; one last ran at "
            f"{show_time(activity.last_ran)}: is a worker that has {fn} up?"
        )
    return (
        f"{lapsed}no job of {fn} has run yet: no worker that has {fn} took one; "
        f"start one with duron.Worker(store, [{fn}, ...])"
    )


async def waiting_hints(store: JobStore, jobs: list[JobInfo]) -> dict[str, str]:
    """Why each waiting job of ``jobs`` waits, by job id.

    Waiting: pending, running under a lease that ran out, or suspended with its
    timer due (by this machine's clock). A worker claims only the functions it has, so the hint is about the
    job's function: whether its jobs run now, or when one last ran.
    """
    now = datetime.now(timezone.utc)
    waiting = [j for j in jobs if _waits_for_a_worker(j, now)]
    names = sorted({j.function for j in waiting if j.function is not None})
    activity = await store.function_activity(names) if names else {}
    return {
        j.id: _hint(j, activity.get(j.function) if j.function else None, now)
        for j in waiting
    }
