"""Where the web view's jobs come from: a job store, or log files.

A :class:`StoreSource` lists a store's jobs with ``list_jobs`` / ``count_jobs``
(paged by the store's cursor, newest first) and reads a job's log read-only (no
lease is ever taken). A :class:`FileSource` shows a JSON Lines log file, or every
``*.jsonl`` file under a directory, as jobs: a file's id is its path relative to
the directory; its function and arguments come from its first entry and its status
from its last one (the whole log is read only for its page).

Both keep each job's :class:`~duron._cli.inspect.Timeline` they read, and read
again only what the log appended since: a running job's page refreshes in the time
its new entries take to decode.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from duron._cli._sources import StoreLog
from duron._cli.inspect import Timeline, read_timeline
from duron._entries import ErrorInfo, JobFinished, JobStarted
from duron._errors import CorruptLogError, JobNotFoundError, UsageError
from duron._jobstore import STATUSES, JobInfo
from duron._json import JSONValue
from duron._log import decode_entry
from duron._redact import redact
from duron.contrib._file import FileLogStorage

__all__ = [
    "FILE_STATUSES",
    "FileSource",
    "JobPage",
    "JobRow",
    "ListPage",
    "ListQuery",
    "StoreSource",
    "open_source",
]

PAGE_SIZE = 50
_CACHED_TIMELINES = 32
_CHILDREN_SHOWN = 100
FILE_STATUSES = ("unfinished", "completed", "failed", "cancelled", "empty", "damaged")
_CANCELLED = ("asyncio.exceptions.CancelledError", "duron._errors.JobCancelledError")
_TAIL_CHUNK = 1 << 16
_TAIL_MAX = 8 << 20


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The jobs a list page asks for (every field checked by the app)."""

    statuses: tuple[str, ...] = ()
    function: str | None = None
    id_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    cursor: str | None = None
    limit: int = PAGE_SIZE


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as a list shows it."""

    id: str
    function: str | None
    status: str
    args: dict[str, JSONValue] | None
    created: datetime | None
    updated: datetime | None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of jobs, the counts per status of the search (status aside), and
    where the next page starts."""

    rows: list[JobRow]
    counts: dict[str, int]
    next_cursor: str | None


@dataclass(slots=True)
class JobPage:
    """What a job's page shows: its row, the store's facts, its log read."""

    row: JobRow
    info: JobInfo | None
    timeline: Timeline
    children: list[str] = field(default_factory=list)


def _row(info: JobInfo) -> JobRow:
    return JobRow(
        info.id,
        info.function,
        info.status,
        info.args,
        info.created,
        info.updated,
        info.error,
    )


class _Timelines:
    """The timelines read lately, by job id, continued as their logs grow."""

    def __init__(self) -> None:
        self._cache: OrderedDict[str, Timeline] = OrderedDict()
        self._locks: dict[str, anyio.Lock] = {}

    async def read(self, job_id: str, storage: Any, label: str) -> Timeline:
        lock = self._locks.setdefault(job_id, anyio.Lock())
        async with lock:
            tl = await read_timeline(storage, into=self._cache.get(job_id))
            tl.log = label
            self._cache[job_id] = tl
            self._cache.move_to_end(job_id)
            while len(self._cache) > _CACHED_TIMELINES:
                old, _ = self._cache.popitem(last=False)
                self._locks.pop(old, None)
            return tl


class StoreSource:
    """The jobs of a job store, read-only unless the app's actions are allowed."""

    kind = "store"
    statuses: tuple[str, ...] = STATUSES

    def __init__(self, url: str, store: Any) -> None:
        self.url = url
        self.store = store
        self.label = redact(url)
        self._timelines = _Timelines()

    async def list(self, q: ListQuery) -> ListPage:
        search: dict[str, Any] = {
            "function": q.function,
            "id_prefix": q.id_prefix,
            "created_after": q.created_after,
            "created_before": q.created_before,
        }
        jobs = await self.store.list_jobs(
            q.statuses or None,
            **search,
            newest_first=True,
            limit=q.limit,
            cursor=q.cursor,
        )
        counts = await self.store.count_jobs(None, **search)
        return ListPage([_row(j) for j in jobs], dict(counts), jobs.next_cursor)

    async def job(self, job_id: str) -> JobPage:
        info: JobInfo = await self.store.get(job_id)
        label = f"{self.label}#{job_id}"
        tl = await self._timelines.read(
            job_id, StoreLog(self.store, job_id, label), label
        )
        children = await self.store.list_jobs(parent=job_id, limit=_CHILDREN_SHOWN)
        return JobPage(_row(info), info, tl, [c.id for c in children])

    async def aclose(self) -> None:
        await self.store.close()


@dataclass(frozen=True, slots=True)
class _FileHead:
    key: tuple[int, int]  # (mtime_ns, size): unchanged file, same summary
    row: JobRow


class FileSource:
    """A log file, or every ``*.jsonl`` file under a directory, as jobs."""

    kind = "files"
    statuses: tuple[str, ...] = FILE_STATUSES

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        self._heads: dict[Path, _FileHead] = {}
        self._timelines = _Timelines()

    def _files(self) -> dict[str, Path]:
        if self.path.is_file():
            return {self.path.name: self.path}
        found: dict[str, Path] = {}
        for where, dirs, names in os.walk(self.path):
            dirs.sort()
            for name in names:
                if name.endswith(".jsonl"):
                    full = Path(where, name)
                    found[full.relative_to(self.path).as_posix()] = full
        return found

    def _head(self, job_id: str, path: Path) -> JobRow | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._heads.get(path)
        if cached is not None and cached.key == key:
            return cached.row
        row = _summary(job_id, path, st.st_mtime)
        self._heads[path] = _FileHead(key, row)
        return row

    def _rows(self) -> list[JobRow]:
        rows = [
            row
            for job_id, path in self._files().items()
            if (row := self._head(job_id, path)) is not None
        ]
        far = datetime.min.replace(tzinfo=timezone.utc)
        rows.sort(key=lambda r: (r.created or far, r.id), reverse=True)
        return rows

    async def list(self, q: ListQuery) -> ListPage:
        rows = await anyio.to_thread.run_sync(self._rows)
        kept = [r for r in rows if _matches(r, q)]
        counts = dict.fromkeys(self.statuses, 0)
        for r in kept:
            counts[r.status] = counts.get(r.status, 0) + 1
        if q.statuses:
            kept = [r for r in kept if r.status in q.statuses]
        start = 0
        if q.cursor is not None:
            if not q.cursor.isdigit():
                raise UsageError(
                    f"cursor {q.cursor[:40]!r} is not a page of this list: "
                    "follow the page's links"
                )
            start = int(q.cursor)
        end = start + q.limit
        more = str(end) if end < len(kept) else None
        return ListPage(kept[start:end], counts, more)

    async def job(self, job_id: str) -> JobPage:
        path = self._files().get(job_id)
        if path is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        row = self._head(job_id, path)
        if row is None:
            raise JobNotFoundError(job=job_id, store=self.label)
        tl = await self._timelines.read(job_id, FileLogStorage(path), str(path))
        return JobPage(row, None, tl)

    async def aclose(self) -> None:
        return None


def _matches(row: JobRow, q: ListQuery) -> bool:
    if q.function is not None and row.function != q.function:
        return False
    if q.id_prefix is not None and not row.id.startswith(q.id_prefix):
        return False
    if q.created_after is not None and (
        row.created is None or row.created <= q.created_after
    ):
        return False
    return q.created_before is None or (
        row.created is not None and row.created < q.created_before
    )


def _summary(job_id: str, path: Path, mtime: float) -> JobRow:
    """A file's row from its first and last lines only."""
    updated = datetime.fromtimestamp(mtime, tz=timezone.utc)
    try:
        with open(path, "rb") as f:
            first = f.readline(_TAIL_MAX)
            last = _last_line(f)
    except OSError:
        return JobRow(job_id, None, "damaged", None, None, updated)
    if not first.endswith(b"\n"):
        return JobRow(job_id, None, "empty", None, None, updated)
    try:
        head = decode_entry(first[:-1], job=str(path), offset=0)
        tail = decode_entry(last, job=str(path), offset=0) if last else None
    except CorruptLogError:
        return JobRow(job_id, None, "damaged", None, None, updated)
    if not isinstance(head, JobStarted):
        return JobRow(job_id, None, "damaged", None, None, updated)
    created = datetime.fromtimestamp(head.t, tz=timezone.utc)
    status, error = "unfinished", None
    if isinstance(tail, JobFinished):
        error = tail.error
        if error is None:
            status = "completed"
        else:
            status = "cancelled" if error.type in _CANCELLED else "failed"
    return JobRow(job_id, head.fn, status, head.args, created, updated, error)


def _last_line(f: Any) -> bytes:
    """The last complete line of a file (a torn tail after it is not a line)."""
    end = f.seek(0, os.SEEK_END)
    size = _TAIL_CHUNK
    while True:
        start = max(0, end - size)
        f.seek(start)
        data = f.read(end - start)
        stop = data.rfind(b"\n")
        if stop < 0:
            return b""
        begin = data.rfind(b"\n", 0, stop)
        if begin >= 0 or start == 0 or size >= _TAIL_MAX:
            return bytes(data[begin + 1 : stop])
        size *= 4


def open_source(target: str) -> StoreSource | FileSource:
    """The source a ``duron ui`` TARGET names: a store URL, a log file or a
    directory of logs.

    Raises:
        UsageError: A URL Duron does not know, or a path that does not exist.
    """
    if "://" in target:
        from duron._cli.jobs import open_store

        if "#" in target:
            raise UsageError(
                f"{redact(target)!r}: give the store URL without #job-id; the page "
                "of each job is linked from the list"
            )
        return StoreSource(target, open_store(target))
    path = Path(target)
    if not path.exists():
        raise UsageError(
            f"no such log file or directory: {target!r} (or give a store URL: "
            "sqlite:///jobs.db, postgresql://user@host/dbname)"
        )
    return FileSource(path)
