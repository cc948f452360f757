"""Searching the job table, for both SQL stores: ``list_jobs``, ``count_jobs``,
``function_activity`` (:class:`JobSearch`) and their SQL.

A :class:`~duron._job_query.JobFilter` becomes one ``WHERE`` clause; a page adds
the keyset condition ``(created, id) > (cursor)`` (``<`` newest first), the order
and a limit one larger than the page (the extra row says whether a next page
exists). The two stores differ only in what a :class:`Dialect` says: parameter
marks, how a time and a list are passed, how a cursor holds a creation time.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from duron._job_query import (
    FunctionActivity,
    JobFilter,
    JobList,
    Page,
    all_statuses,
    cursor_error,
    encode_cursor,
    function_names,
    job_filter,
    page,
)

if TYPE_CHECKING:
    from duron._durable import DurableFn
    from duron._jobstore import JobInfo, JobStatus

__all__ = [
    "JOB_COLUMNS",
    "Dialect",
    "JobSearch",
    "PostgresDialect",
    "SQLiteDialect",
    "activity_sql",
    "count_sql",
    "list_sql",
]

JOB_COLUMNS = (
    "id, function, args, status, result, error, created, updated, lease_owner, "
    "lease_expires, epoch, cancel_requested, forked_from, wake_at, parent_id"
)
"""The columns of a job row, in the order every read of one selects them."""

# Jobs a worker failed because it did not have their function (before workers
# claimed only their own functions) say nothing of a worker that has it.
_UNKNOWN_FUNCTION = '%"duron._errors.UnknownFunctionError"%'


class Dialect:
    """What differs between the stores' SQL."""

    table = "jobs"
    mark = "?"
    now = "?"  # the current time: a parameter (SQLite) or the server's (PostgreSQL)

    def one_of(self, column: str, values: tuple[str, ...]) -> tuple[str, list[Any]]:
        marks = ", ".join(self.mark for _ in values)
        return f"{column} IN ({marks})", list(values)

    def names(self, values: tuple[str, ...]) -> tuple[str, list[Any]]:
        """A table of names (one column ``name``) to join against."""
        return "(SELECT value AS name FROM json_each(?))", [_json_list(values)]

    def time(self, moment: datetime) -> Any:
        return moment.timestamp()

    def now_params(self) -> list[Any]:
        return [time.time()]

    def cursor_time(self, created: Any) -> Any:
        """A row's ``created`` as a cursor holds it (JSON data)."""
        return created

    def position(self, created: Any) -> Any:
        """A cursor's time as a parameter; :class:`~duron.UsageError` if this
        store never writes such a cursor."""
        if type(created) not in (int, float) or not math.isfinite(created):
            raise cursor_error(created)
        return created


class SQLiteDialect(Dialect):
    """The SQLite store: times are seconds since the epoch (REAL)."""


class PostgresDialect(Dialect):
    """The PostgreSQL store: times are ``timestamptz`` (microseconds)."""

    mark = "%s"
    now = "now()"

    def __init__(self, q: str) -> None:
        self.table = f"{q}.jobs"

    def one_of(self, column: str, values: tuple[str, ...]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]

    def names(self, values: tuple[str, ...]) -> tuple[str, list[Any]]:
        return "(SELECT unnest(%s::text[]) AS name)", [list(values)]

    def time(self, moment: datetime) -> Any:
        return moment

    def now_params(self) -> list[Any]:
        return []

    def cursor_time(self, created: Any) -> Any:
        assert isinstance(created, datetime)
        return created.astimezone(timezone.utc).isoformat()

    def position(self, created: Any) -> Any:
        if isinstance(created, str):
            try:
                moment = datetime.fromisoformat(created)
            except ValueError:
                raise cursor_error(created) from None
            if moment.utcoffset() is not None:
                return moment
        raise cursor_error(created)


def _json_list(values: tuple[str, ...]) -> str:
    return orjson.dumps(list(values)).decode()


def _where(f: JobFilter, d: Dialect) -> tuple[list[str], list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    if f.statuses is not None:
        sql, ps = d.one_of("status", f.statuses)
        parts.append(sql)
        params += ps
    if f.functions is not None:
        sql, ps = d.one_of("function", f.functions)
        parts.append(sql)
        params += ps
    if f.id_prefix is not None:
        # A character count both databases agree on, whatever the collation.
        parts.append(f"substr(id, 1, {d.mark}) = {d.mark}")
        params += [len(f.id_prefix), f.id_prefix]
    for column, op, moment in (
        ("created", ">", f.created_after),
        ("created", "<", f.created_before),
        ("updated", ">", f.updated_after),
        ("updated", "<", f.updated_before),
    ):
        if moment is not None:
            parts.append(f"{column} {op} {d.mark}")
            params.append(d.time(moment))
    if f.parent is not None:
        parts.append(f"parent_id = {d.mark}")
        params.append(f.parent)
    return parts, params


def list_sql(columns: str, f: JobFilter, p: Page, d: Dialect) -> tuple[str, list[Any]]:
    """The ``SELECT`` of one page: at most ``p.limit + 1`` rows."""
    parts, params = _where(f, d)
    if p.after is not None:
        created, job_id = p.after
        op = "<" if p.newest_first else ">"
        parts.append(f"(created, id) {op} ({d.mark}, {d.mark})")
        params += [d.position(created), job_id]
    direction = " DESC" if p.newest_first else ""
    sql = f"SELECT {columns} FROM {d.table}"
    if parts:
        sql += " WHERE " + " AND ".join(parts)
    sql += f" ORDER BY created{direction}, id{direction}"
    if p.limit is not None:
        sql += f" LIMIT {d.mark}"
        params.append(p.limit + 1)
    return sql, params


def count_sql(f: JobFilter, d: Dialect) -> tuple[str, list[Any]]:
    """``(status, count)`` of the jobs the filter keeps."""
    parts, params = _where(f, d)
    sql = f"SELECT status, count(*) FROM {d.table}"
    if parts:
        sql += " WHERE " + " AND ".join(parts)
    return sql + " GROUP BY status", params


def activity_sql(functions: tuple[str, ...], d: Dialect) -> tuple[str, list[Any]]:
    """``(function, running now, updated of its newest job that ran)`` of each
    function: two index lookups per function, whatever the job table's size."""
    names, name_params = d.names(functions)
    t, m = d.table, d.mark
    sql = (
        f"SELECT f.name, (SELECT count(*) FROM {t} WHERE function = f.name "
        f"AND status = 'running' AND lease_expires >= {d.now}), "
        f"(SELECT updated FROM {t} WHERE function = f.name AND epoch > 0 "
        f"AND (error IS NULL OR error NOT LIKE {m}) "
        f"ORDER BY created DESC, id DESC LIMIT 1) "
        f"FROM {names} AS f"
    )
    return sql, [*d.now_params(), _UNKNOWN_FUNCTION, *name_params]


class JobSearch(ABC):
    """The job store API's searches, over a store's :meth:`_query` and
    :class:`Dialect` (a base of :class:`~duron.contrib._sqlstore.SQLStore`)."""

    _dialect: Dialect

    @abstractmethod
    async def _query(
        self, sql: str, params: list[Any], op: str
    ) -> list[tuple[Any, ...]]:
        """The rows of a read-only statement (one of :mod:`._job_search`'s)."""

    @abstractmethod
    def _job_info(self, row: tuple[Any, ...]) -> JobInfo:
        """A :data:`JOB_COLUMNS` row as a :class:`~duron.JobInfo`."""

    @staticmethod
    @abstractmethod
    def _when(value: Any) -> datetime | None:
        """A time column's value as an aware datetime."""

    async def list_jobs(
        self,
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
        newest_first: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobList:
        """One page of the jobs the filters keep, ordered by creation time.

        Every filter is optional; given several, a job must pass them all.

        Args:
            status: Only jobs with this status (or one of these).
            function: Only jobs of this durable function (a name or the
                ``@duron.durable`` function), or of one of these.
            id_prefix: Only jobs whose id starts with this.
            created_after: Only jobs created after this time (aware datetime).
            created_before: Only jobs created before this time.
            updated_after: Only jobs whose status or owner last changed after
                this time.
            updated_before: Only jobs last changed before this time.
            parent: Only the child jobs this job started (``ctx.start_job``).
            newest_first: Newest first (default: oldest first).
            limit: At most this many jobs (default: every one).
            cursor: Start after the position a previous page's ``next_cursor``
                names (pass the same filters and order).

        Returns:
            The jobs, a list whose ``next_cursor`` continues it (``None`` on the
            last page). Paging is stable: jobs added meanwhile are created later
            (at the end, oldest first), and no job is shown twice.

        Raises:
            UsageError: A bad argument (the message names it), or a cursor that
                is not one this store's ``list_jobs()`` returned.
        """
        which = job_filter(
            status,
            function=function,
            id_prefix=id_prefix,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
            parent=parent,
        )
        where = page(newest_first=newest_first, limit=limit, cursor=cursor)
        sql, params = list_sql(JOB_COLUMNS, which, where, self._dialect)
        rows = await self._query(sql, params, "list")
        more = where.limit is not None and len(rows) > where.limit
        if more:
            del rows[-1]
        jobs = [self._job_info(row) for row in rows]
        last = rows[-1] if more else None
        next_cursor = (
            None
            if last is None
            else encode_cursor(self._dialect.cursor_time(last[6]), last[0])
        )
        return JobList(jobs, next_cursor)

    async def count_jobs(
        self,
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
    ) -> dict[JobStatus, int]:
        """How many jobs the filters keep, per status.

        Takes the filters of :meth:`list_jobs`.

        Returns:
            Every status asked for (all five by default), in the order
            ``pending, running, completed, failed, cancelled``, with its count
            (0 included).

        Raises:
            UsageError: A bad argument (the message names it).
        """
        which = job_filter(
            status,
            function=function,
            id_prefix=id_prefix,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
            parent=parent,
        )
        sql, params = count_sql(which, self._dialect)
        counted = dict(await self._query(sql, params, "count"))
        return {s: int(counted.get(s, 0)) for s in all_statuses(which.statuses)}

    async def function_activity(
        self, functions: Iterable[str | DurableFn[..., Any]]
    ) -> dict[str, FunctionActivity]:
        """What the job table says of the workers of each of these functions.

        Workers do not register with the store: this is what their jobs show
        (see :class:`~duron.FunctionActivity`). ``duron jobs list`` uses it to
        say why a pending job waits.

        Args:
            functions: Durable function names or ``@duron.durable`` functions.

        Returns:
            Each function's :class:`~duron.FunctionActivity`, by name.

        Raises:
            UsageError: Something that is not a name nor a durable function.
        """
        names = function_names(functions)
        if not names:
            return {}
        sql, params = activity_sql(names, self._dialect)
        rows = await self._query(sql, params, "list")
        return {
            name: FunctionActivity(name, int(running), self._when(last))
            for name, running, last in rows
        }
