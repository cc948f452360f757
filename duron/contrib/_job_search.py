"""The SQL of a job search, for both SQL stores: listing, counting, and what the
job table says of a function's workers.

A :class:`~duron._job_query.JobFilter` becomes one ``WHERE`` clause; a page adds
the keyset condition ``(created, id) > (cursor)`` (``<`` newest first), the order
and a limit one larger than the page (the extra row says whether a next page
exists). The two stores differ only in what a :class:`Dialect` says: parameter
marks, how a time and a list are passed, how a cursor holds a creation time.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from duron._job_query import JobFilter, Page, cursor_error

__all__ = [
    "Dialect",
    "PostgresDialect",
    "SQLiteDialect",
    "activity_sql",
    "count_sql",
    "list_sql",
]

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
    # A filter on a job's parent goes here, once the jobs table records one.
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
