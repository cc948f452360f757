"""``duron jobs``: list, count, show, cancel, resume, fork and prune the jobs of a
store (and send input to them, complete their futures, tail their output:
``jobs_io``).

The store is named by a URL:

* ``sqlite:///jobs.db``: a path relative to the current directory;
* ``sqlite:////var/lib/app/jobs.db``: an absolute path (four slashes);
* ``postgresql://user:password@host:5432/dbname``: a PostgreSQL store (add
  ``?schema=NAME`` for tables outside the default ``duron`` schema).

The CLI never creates a store: a URL naming a missing file is an error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from duron._cli._job_list import (
    add_filters,
    duration,
    filters,
    show_time,
    waiting_hints,
)
from duron._cli.jobs_io import register_io
from duron._errors import DuronError, UsageError
from duron._log import decode_entry
from duron._redact import redact

if TYPE_CHECKING:
    import argparse

    from duron._job_query import JobList
    from duron._jobstore import JobInfo, JobStatus, JobStore
    from duron._limits import LogSize

__all__ = ["open_store", "register"]

_T = TypeVar("_T")

_URL_HELP = (
    "the store: sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user@host/dbname"
)


def open_store(url: str) -> JobStore:
    """The job store a URL names (never creating one).

    Raises:
        UsageError: The URL's form or scheme is not one Duron knows.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UsageError(
            f"{redact(url)!r} is not a store URL; write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise UsageError(
                f"{redact(url)!r}: a SQLite URL has three slashes before a relative path "
                "(sqlite:///jobs.db) and four before an absolute one "
                "(sqlite:////var/lib/app/jobs.db)"
            )
        from duron.contrib.storage import SQLiteStore

        return SQLiteStore(rest[1:], create=False)
    if scheme in ("postgresql", "postgres"):
        from duron.contrib._postgres import store_from_url

        try:
            return store_from_url(url)
        except (ValueError, ImportError) as exc:  # a bad DSN, no psycopg
            raise UsageError(str(exc)) from exc
    raise UsageError(
        f"{redact(url)!r}: unknown store scheme {scheme!r}; Duron knows sqlite:///path.db "
        "and postgresql://user@host/dbname"
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list, count, show, cancel, resume, fork and prune the jobs of a store",
        description="Manage the jobs of a job store. URL names the store: "
        "sqlite:///relative/path.db, sqlite:////absolute/path.db or "
        "postgresql://user:password@host:5432/dbname[?schema=NAME].",
    )
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "list",
        help="list jobs, oldest first, and why the waiting ones wait",
        description="List jobs, oldest first (--newest: newest first). The hints "
        "(why a job waits, where the next page starts) go to stderr.",
    )
    p.add_argument("url", help=_URL_HELP)
    add_filters(p)
    p.add_argument("--newest", action="store_true", help="newest first")
    p.add_argument("--limit", type=int, help="at most this many jobs (a page)")
    p.add_argument(
        "--cursor",
        help="the page after the one that printed this cursor (same filters and order)",
    )
    p.add_argument(
        "--sizes",
        action="store_true",
        help="also each job's log size: entries and bytes (reads every entry of "
        "the jobs listed: use with --limit on a large store)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_list)

    p = sub.add_parser("count", help="count jobs per status")
    p.add_argument("url", help=_URL_HELP)
    add_filters(p)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_count)

    p = sub.add_parser("show", help="show one job (and with --log, its log)")
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("job_id")
    p.add_argument("--log", action="store_true", help="also print the log's entries")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=_show)

    p = sub.add_parser(
        "cancel",
        help="cancel a job (delivered by the worker that runs it)",
    )
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("job_id")
    p.set_defaults(func=_cancel)

    p = sub.add_parser(
        "resume",
        help="make a job a worker failed (unknown function, diverged code) or a "
        "dead process held runnable again",
    )
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("job_id", nargs="?", help="the job (or --storage-failures)")
    p.add_argument(
        "--storage-failures",
        action="store_true",
        help="every job an older Duron marked failed because its storage failed "
        "(a StorageError, its log without an end)",
    )
    p.set_defaults(func=_resume)

    p = sub.add_parser(
        "fork",
        help="copy a job's log up to an operation into a new pending job",
    )
    p.add_argument("url", help=_URL_HELP)
    p.add_argument("job_id")
    p.add_argument(
        "--at",
        type=int,
        required=True,
        help="the first operation (numbered from 0) the new job runs again",
    )
    p.add_argument("--id", dest="new_id", help="the new job's id (default: random)")
    p.set_defaults(func=_fork)

    p = sub.add_parser("prune", help="delete ended jobs and their logs")
    p.add_argument("url", help=_URL_HELP)
    p.add_argument(
        "--older-than",
        required=True,
        type=duration,
        help="unchanged for this long: 30d, 12h, 15m, 45s",
    )
    p.add_argument(
        "--status",
        action="append",
        choices=("completed", "failed", "cancelled"),
        help="only this status (repeat for several; default: all three)",
    )
    p.set_defaults(func=_prune)

    register_io(sub, _URL_HELP)


# -- helpers -----------------------------------------------------------------------------


def _run(url: str, action: Callable[[JobStore], Awaitable[_T]]) -> _T:
    """Open the store, run ``action`` on it, close it."""

    async def main() -> _T:
        store = open_store(url)
        try:
            return await action(store)
        finally:
            await store.close()

    return anyio.run(main)


def _command(
    fn: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Report a Duron error (unknown job, not a store...) as one line, exit code 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except DuronError as exc:
            print(f"duron jobs: error: {redact(str(exc))}", file=sys.stderr)
            return 2

    return run


def _as_json(info: JobInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "function": info.function,
        "status": info.status,
        "args": info.args,
        "result": info.result,
        "error": info.error.to_json() if info.error is not None else None,
        "created": show_time(info.created),
        "updated": show_time(info.updated),
        "lease_owner": info.lease_owner,
        "lease_expires": show_time(info.lease_expires) if info.lease_expires else None,
        "epoch": info.epoch,
        "cancel_requested": info.cancel_requested,
        "forked_from": info.forked_from,
        "parent": info.parent,
        "wake_at": show_time(info.wake_at) if info.wake_at else None,
    }


# -- actions ----------------------------------------------------------------------------


@_command
def _list(args: argparse.Namespace) -> int:
    async def run(
        store: JobStore,
    ) -> tuple[JobList, dict[str, str], dict[str, LogSize] | None]:
        jobs = await store.list_jobs(
            **filters(args),
            newest_first=args.newest,
            limit=args.limit,
            cursor=args.cursor,
        )
        hints = await waiting_hints(store, jobs)
        log_sizes = getattr(store, "log_sizes", None)
        if not args.sizes or log_sizes is None:
            return jobs, hints, None
        sizes: dict[str, LogSize] = await log_sizes([j.id for j in jobs])
        return jobs, hints, sizes

    jobs, hints, sizes = _run(args.url, run)
    if args.json:
        for info in jobs:
            data = _as_json(info)
            data["waiting"] = hints.get(info.id)
            if sizes is not None:
                size = sizes.get(info.id)
                data["entries"] = size.entries if size is not None else 0
                data["bytes"] = size.bytes if size is not None else 0
                data["runs"] = size.runs if size is not None else 0
            print(orjson.dumps(data).decode())
    else:
        _print_table(jobs, sizes)
        # One line per reason (jobs of one function wait for the same one).
        waiting: dict[str, list[str]] = {}
        for job_id, hint in hints.items():
            waiting.setdefault(hint, []).append(job_id)
        for hint, ids in waiting.items():
            more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
            print(f"waiting: {', '.join(ids[:3])}{more}: {hint}", file=sys.stderr)
    if jobs.next_cursor is not None:
        print(f"next page: --cursor {jobs.next_cursor}", file=sys.stderr)
    return 0


def _print_table(jobs: list[JobInfo], sizes: dict[str, LogSize] | None) -> None:
    head: tuple[str, ...] = ("ID", "STATUS", "UPDATED")
    rows = [(*head, "RUNS", "ENTRIES", "BYTES") if sizes is not None else head]
    for j in jobs:
        row: tuple[str, ...] = (j.id, j.status, show_time(j.updated))
        if sizes is not None:
            size = sizes.get(j.id)
            row += (
                (str(size.runs), str(size.entries), f"{size.bytes:,}")
                if size
                else ("0", "0", "0")
            )
        rows.append(row)
    calls = ["CALL", *(j.describe_call() for j in jobs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r, call in zip(rows, calls, strict=True):
        cells = [
            c.rjust(w) if i >= 3 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join([*cells, call]))


@_command
def _count(args: argparse.Namespace) -> int:
    async def run(store: JobStore) -> dict[JobStatus, int]:
        return await store.count_jobs(**filters(args))

    per_status = _run(args.url, run)
    rows: list[tuple[str, int]] = [*per_status.items()]
    rows.append(("total", sum(per_status.values())))
    if args.json:
        print(orjson.dumps(dict(rows)).decode())
        return 0
    width = max(len(k) for k, _ in rows)
    for status, n in rows:
        print(f"{status:<{width}}  {n}")
    return 0


@_command
def _show(args: argparse.Namespace) -> int:
    async def run(
        store: JobStore,
    ) -> tuple[JobInfo, list[tuple[int, bytes]], str | None]:
        info = await store.get(args.job_id)
        entries = [e async for e in store.read_log(args.job_id)]
        return info, entries, (await waiting_hints(store, [info])).get(info.id)

    info, entries, waiting = _run(args.url, run)
    if args.json:
        data = _as_json(info)
        data["waiting"] = waiting
        data["entries"] = len(entries)
        data["bytes"] = sum(len(raw) for _, raw in entries)
        if args.log:
            # Each entry is checked first: a damaged one is a one-line error.
            for seq, raw in entries:
                decode_entry(raw, job=info.id, offset=seq)
            data["log"] = [orjson.loads(raw) for _, raw in entries]
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    lines = [
        ("job", info.id),
        ("call", info.describe_call()),
        ("status", info.status),
        ("created", show_time(info.created)),
        ("updated", show_time(info.updated)),
    ]
    if info.lease_owner is not None:
        until = show_time(info.lease_expires) if info.lease_expires else "?"
        lines.append(
            ("lease", f"{info.lease_owner} until {until} (epoch {info.epoch})")
        )
    if waiting is not None:
        lines.append(("waiting", waiting))
    if info.cancel_requested:
        lines.append(("cancel", "requested"))
    if info.forked_from is not None:
        lines.append(("forked from", info.forked_from))
    if info.parent is not None:
        lines.append(("parent", info.parent))
    if info.status == "suspended":
        lines.append(
            (
                "suspended",
                "until input arrives"
                if info.wake_at is None
                else f"until {show_time(info.wake_at)} or input arrives",
            )
        )
    if info.status == "completed":
        lines.append(("result", orjson.dumps(info.result).decode()))
    if info.error is not None:
        lines.append(("error", f"{info.error.type}: {info.error.message}"))
    size = sum(len(raw) for _, raw in entries)
    lines.append(("log", f"{len(entries)} entries, {size:,} bytes"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    if args.log:
        for seq, raw in entries:  # as stored, damaged or not
            print(f"{seq:>6}  {raw.decode('utf-8', 'replace')}")
    return 0


@_command
def _cancel(args: argparse.Namespace) -> int:
    async def run(store: JobStore) -> tuple[bool, JobInfo]:
        requested = await store.cancel(args.job_id)
        return requested, await store.get(args.job_id)

    requested, info = _run(args.url, run)
    if not requested:
        print(f"job {info.id} already ended ({info.status}); nothing to cancel")
        return 1
    if info.status == "cancelled":
        print(f"job {info.id} cancelled")
    else:
        print(
            f"job {info.id}: cancel requested; the worker running it delivers it "
            "at the job's next await"
        )
    return 0


_STORAGE_ERRORS = frozenset(
    {"duron._errors.StorageError", "duron._errors.StoreUnavailableError"}
)


@_command
def _resume(args: argparse.Namespace) -> int:
    if (args.job_id is None) == (not args.storage_failures):
        raise UsageError(
            "name one job to resume, or --storage-failures for every job failed by "
            "its storage (not both)"
        )
    if args.job_id is not None:

        async def one(store: JobStore) -> None:
            await store.requeue(args.job_id)

        _run(args.url, one)
        print(f"job {args.job_id} is pending: a worker will resume it")
        return 0

    async def stranded(store: JobStore) -> list[str]:
        requeued = []
        for info in await store.list_jobs("failed"):
            if info.error is not None and info.error.type in _STORAGE_ERRORS:
                await store.requeue(info.id)  # refuses a log that recorded an end
                requeued.append(info.id)
        return requeued

    ids = _run(args.url, stranded)
    for job_id in ids:
        print(f"job {job_id} is pending: a worker will resume it")
    print(f"{len(ids)} job{'s' if len(ids) != 1 else ''} failed by storage requeued")
    return 0


@_command
def _fork(args: argparse.Namespace) -> int:
    async def run(store: JobStore) -> str:
        return await store.fork(args.job_id, at=args.at, new_id=args.new_id)

    print(_run(args.url, run))
    return 0


@_command
def _prune(args: argparse.Namespace) -> int:
    statuses = args.status or ["completed", "failed", "cancelled"]

    async def run(store: JobStore) -> int:
        return await store.prune(status=statuses, older_than=args.older_than)

    count = _run(args.url, run)
    print(f"deleted {count} job{'s' if count != 1 else ''}")
    return 0
