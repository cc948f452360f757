"""Searching a job store: which jobs a search asks for, and the pages it returns.

``store.list_jobs(...)`` and ``store.count_jobs(...)`` take the same filters
(statuses, functions, an id prefix, created and updated time ranges); this module
checks them, once for every store, into a :class:`JobFilter` the stores turn into
SQL. Pages are ordered by ``(created, id)``, oldest or newest first, and a page's
:attr:`JobList.next_cursor` is the position of its last job: the next page is the
jobs after it in the same order. A position does not move when jobs are added
(new jobs are created later) or removed, so paging never shows a job twice nor
skips one that was there all along.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from duron._errors import UsageError
from duron._jobstore import STATUSES, JobInfo, JobStatus, statuses
from duron._options import is_job_id

if TYPE_CHECKING:
    from duron._durable import DurableFn

__all__ = [
    "FunctionActivity",
    "JobFilter",
    "JobList",
    "Page",
    "all_statuses",
    "cursor_error",
    "decode_cursor",
    "encode_cursor",
    "function_names",
    "job_filter",
    "page",
]

_CURSOR_PREFIX = "c1."


class JobList(list[JobInfo]):
    """One page of ``store.list_jobs()``: a list of :class:`~duron.JobInfo`, and
    where the next page starts.

    Attributes:
        next_cursor: Pass it as ``list_jobs(cursor=...)`` (with the same filters
            and order) for the jobs after this page; ``None`` when this page is
            the last one.
    """

    next_cursor: str | None

    def __init__(
        self, jobs: Iterable[JobInfo] = (), next_cursor: str | None = None
    ) -> None:
        super().__init__(jobs)
        self.next_cursor = next_cursor


@dataclass(frozen=True, slots=True)
class FunctionActivity:
    """What a store's job table says of one durable function's workers.

    Workers do not register with the store, so whether a live worker has a
    function is inferred from its jobs: one of them running under a live lease
    means a worker (or a ``store.log()`` writer) has it now; a job of it that
    ran means one had it then.

    Attributes:
        function: The durable function's name.
        running: Its jobs running now under a lease that has not run out.
        last_ran: When the newest of its jobs that a writer took (a worker claimed
            it, or ``store.log()`` opened it) last changed; ``None`` if none ever
            ran (jobs a worker failed as an unknown function do not count).
    """

    function: str
    running: int
    last_ran: datetime | None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a search asks for (every field checked; ``None``: any).

    Times are aware datetimes; ``*_after`` and ``*_before`` are strict bounds.
    """

    statuses: tuple[JobStatus, ...] | None = None
    functions: tuple[str, ...] | None = None
    id_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    parent: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a search: order, size and where it starts."""

    newest_first: bool = False
    limit: int | None = None
    after: tuple[Any, str] | None = None  # (created as the cursor holds it, id)


def function_names(
    function: str | DurableFn[..., Any] | Iterable[str | DurableFn[..., Any]],
    what: str = "functions",
) -> tuple[str, ...]:
    """Durable function names from names or ``@duron.durable`` functions.

    Raises:
        UsageError: Something that is not a name nor a durable function.
    """
    from duron._durable import DurableFn

    items: list[object]
    if isinstance(function, (str, DurableFn)):
        items = [function]
    elif isinstance(function, Iterable):
        items = list(function)
    else:
        items = [function]
    names: list[str] = []
    for item in items:
        if isinstance(item, DurableFn):
            names.append(item.name)
        elif isinstance(item, str) and item:
            names.append(item)
        else:
            raise UsageError(
                f"{what} takes durable function names or @duron.durable functions, "
                f"not {item!r}"
            )
    return tuple(dict.fromkeys(names))


def job_filter(
    status: JobStatus | Iterable[JobStatus] | None = None,
    *,
    function: str
    | DurableFn[..., Any]
    | Iterable[str | DurableFn[..., Any]]
    | None = None,
    id_prefix: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    parent: str | None = None,
) -> JobFilter:
    """The filters of ``list_jobs`` / ``count_jobs``, checked.

    Raises:
        UsageError: An argument of the wrong type or value: the message names it.
    """
    wanted = None if status is None else tuple(statuses(status, ended=False))
    functions = None
    if function is not None:
        functions = function_names(function, "function")
        if not functions:
            raise UsageError("function must name at least one durable function")
    if parent is not None and (type(parent) is not str or not parent):
        raise UsageError(f"parent must be a job id, not {parent!r}")
    if id_prefix is not None and (type(id_prefix) is not str or not id_prefix):
        raise UsageError(
            f"id_prefix must be a non-empty string (the start of job ids), "
            f"not {id_prefix!r}"
        )
    times = {
        "created_after": created_after,
        "created_before": created_before,
        "updated_after": updated_after,
        "updated_before": updated_before,
    }
    for name, moment in times.items():
        if moment is None:
            continue
        if not isinstance(moment, datetime):
            raise UsageError(
                f"{name} must be a datetime with a time zone, not {moment!r}"
            )
        if moment.utcoffset() is None:
            raise UsageError(
                f"{name} must be a datetime with a time zone (naive: {moment!r}); "
                "give it one, e.g. datetime(..., tzinfo=timezone.utc)"
            )
    for field in ("created", "updated"):
        after, before = times[f"{field}_after"], times[f"{field}_before"]
        if after is not None and before is not None and after >= before:
            raise UsageError(
                f"{field}_after ({after.isoformat()}) must be earlier than "
                f"{field}_before ({before.isoformat()}): no job is in between"
            )
    return JobFilter(
        wanted,  # type: ignore[arg-type]  # checked by statuses()
        functions,
        id_prefix,
        created_after,
        created_before,
        updated_after,
        updated_before,
        parent,
    )


def page(*, newest_first: bool, limit: int | None, cursor: str | None) -> Page:
    """The order, size and start of a page, checked (the start's time still as
    the cursor holds it: the store reads it).

    Raises:
        UsageError: A bad ``newest_first``, ``limit`` or ``cursor``.
    """
    if type(newest_first) is not bool:
        raise UsageError(f"newest_first must be True or False, not {newest_first!r}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise UsageError(f"limit must be a whole number >= 1, not {limit!r}")
    return Page(newest_first, limit, None if cursor is None else decode_cursor(cursor))


def encode_cursor(created: Any, job_id: str) -> str:
    """An opaque cursor for the position ``(created, job_id)``; ``created`` as a
    store writes it into the cursor (JSON data)."""
    data = orjson.dumps([created, job_id])
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[Any, str]:
    """The position a cursor of :func:`encode_cursor` holds.

    Raises:
        UsageError: Not a cursor ``list_jobs()`` returned.
    """
    if not isinstance(cursor, str):
        raise UsageError(
            f"cursor must be a string list_jobs() returned (next_cursor), "
            f"not {cursor!r}"
        )
    shown = cursor if len(cursor) <= 80 else cursor[:77] + "..."
    bad = UsageError(
        f"cursor {shown!r} is not one list_jobs() returned: pass a page's "
        "next_cursor (`duron jobs list` prints it as --cursor)"
    )
    if not cursor.startswith(_CURSOR_PREFIX):
        raise bad
    body = cursor[len(_CURSOR_PREFIX) :]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if (
        type(data) is not list
        or len(data) != 2
        or not is_job_id(data[1])
        or type(data[0]) not in (str, int, float)
    ):
        raise bad
    return data[0], data[1]


def cursor_error(created: object) -> UsageError:
    """The error for a cursor whose time this store cannot read (another store's)."""
    return UsageError(
        f"cursor holds the time {created!r}, which is not one this store writes: "
        "pass a next_cursor of this store's list_jobs()"
    )


def all_statuses(wanted: tuple[JobStatus, ...] | None) -> tuple[JobStatus, ...]:
    """The statuses a count reports: the ones asked for, else all of them."""
    return STATUSES if wanted is None else wanted
