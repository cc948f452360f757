"""Where the logs named on a command line live: files, or jobs in a store.

A log is named by:

* a path: a JSON Lines file log (``logs/order-42.jsonl``);
* a store URL with the job id as its fragment: ``sqlite:///jobs.db#order-42``
  (the store URL is the one ``duron jobs`` takes: ``sqlite:///`` + a relative
  path, ``sqlite:////`` + an absolute one; a ``#`` or ``%`` in a job id is
  percent-encoded);
* a store URL without a fragment, or ``--store URL`` without ``--job``, where a
  command accepts several logs: every job of the store (``duron verify`` keeps
  those of the functions it checks).

Logs in a store are read through a read-only view: the CLI never takes a job's
lease, so it can look at the log of a job that is running.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from duron._errors import UsageError
from duron._redact import redact
from duron._storage import LogStorage
from duron.contrib._file import FileLogStorage

if TYPE_CHECKING:
    from duron._jobstore import JobInfo

__all__ = ["LogRef", "StoreLog", "Stores", "is_store_url", "split_job"]


def is_store_url(text: str) -> bool:
    """Whether a command-line log argument names a store rather than a file."""
    return "://" in text


def split_job(url: str) -> tuple[str, str | None]:
    """``("sqlite:///jobs.db", "order-42")`` from ``sqlite:///jobs.db#order-42``."""
    base, _, fragment = url.partition("#")
    return base, unquote(fragment) if fragment else None


@dataclass(frozen=True, slots=True)
class LogRef:
    """One log named on the command line, ready to be read."""

    label: str
    storage: LogStorage
    size: int | None = None  # bytes, for a file: progress


class StoreLog:
    """A read-only view of one job's log in a store (no lease is ever taken)."""

    def __init__(self, store: Any, job_id: str, label: str) -> None:
        self._store = store
        self.job_id = job_id
        self.label = label

    async def acquire(self) -> None:
        raise UsageError(f"{self.label} is opened read-only by the command line")

    async def release(self) -> None:
        return None

    def read(self) -> AsyncIterator[tuple[int, bytes]]:
        reader: AsyncIterator[tuple[int, bytes]] = self._store.read_log(self.job_id)
        return reader

    async def append(self, entries: Sequence[bytes], /) -> None:
        raise UsageError(f"{self.label} is opened read-only by the command line")

    async def run_count(self) -> int:
        """How many runs the job's chain holds (it continued as new)."""
        count: int = await self._store.run_count(self.job_id)
        return count

    def read_run(self, run: int) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of run ``run`` of the job's chain."""
        reader: AsyncIterator[tuple[int, bytes]] = self._store.read_run(
            self.job_id, run
        )
        return reader


class Stores:
    """Opens the logs a command names, one store object per database, closed at the end."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}

    def store(self, url: str) -> Any:
        """The store at ``url`` (opened once; never created)."""
        base, _ = split_job(url)
        store = self._open.get(base)
        if store is None:
            from duron._cli.jobs import open_store

            store = self._open[base] = open_store(base)
        return store

    def log(self, arg: str) -> LogRef:
        """The log named by a path or by ``URL#job-id``."""
        if not is_store_url(arg):
            try:
                size: int | None = os.stat(arg).st_size
            except OSError:
                size = None
            return LogRef(arg, FileLogStorage(arg), size)
        base, job = split_job(arg)
        if job is None:
            raise UsageError(
                f"{redact(arg)!r} names a store, not one job's log: add #job-id "
                "(e.g. sqlite:///jobs.db#order-42)"
            )
        return self.job(base, job)

    def job(self, url: str, job_id: str) -> LogRef:
        """The log of job ``job_id`` in the store at ``url``, labelled with the URL
        without its password."""
        base, _ = split_job(url)
        label = f"{redact(base)}#{job_id}"
        return LogRef(label, StoreLog(self.store(base), job_id, label))

    async def jobs(self, url: str, statuses: Sequence[str] | None) -> list[JobInfo]:
        """Every job of the store at ``url`` (with one of ``statuses``), oldest first."""
        store = self.store(url)
        infos: list[JobInfo] = await store.list_jobs(statuses or None)
        return infos

    async def aclose(self) -> None:
        stores, self._open = list(self._open.values()), {}
        for store in stores:
            await store.close()
