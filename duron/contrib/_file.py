"""The embedded default: one job's log in a JSON Lines file.

Each entry is one line. A batch is written with a single ``write`` on a file opened
for appending, so a crash leaves a prefix of the batch and at most one torn line at
the very end; :meth:`FileLogStorage.acquire` cuts that torn line off before the next
append. The writer holds an OS lock (``flock``) on the file, so a second process (or a
second job in this process) gets :class:`~duron.LogLockedError`.

A job that continues as new keeps its runs as a chain of files next to the one it
was opened with: ``log.jsonl`` holds run 0, ``log.1.jsonl`` run 1, ``log.2.jsonl``
run 2, and so on (:func:`run_path`); the highest number is the current run, the
one ``read()`` yields and appends go to. The lock stays on ``log.jsonl`` for the
whole chain. The switch writes the old run's end entry, which names the next run
(its job entry), then creates the next file holding that job entry; a crash in
between leaves the end entry, and :meth:`FileLogStorage.acquire` finishes the
switch from it, so the job has continued exactly once. A next file left empty by a
crash while it was created gets its job entry the same way.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

import anyio.to_thread

from duron._errors import LogLockedError, StorageError, StoreUnavailableError
from duron._limits import DEFAULT_LIMITS, LogLimits, checked_limits
from duron._log import JobFinished, decode_entry, encode_entry

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Durability", "FileLogStorage", "current_run", "run_path"]

Durability = Literal["flush", "fsync"]
_CHUNK = 1 << 18  # 256 KiB: reading a log of any length holds about this much
_log = logging.getLogger("duron")
# Errors that may pass without the log changing: a full or read-only disk, an I/O
# error, a lock or file handle the system may give back. Another try may succeed.
_PASSING = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EIO",
        "EACCES",
        "EPERM",
        "EAGAIN",
        "EBUSY",
        "ENOLCK",
        "ESTALE",
    )
    if hasattr(errno, name)
)


class FileLogStorage:
    """A job's log in a JSON Lines file.

    Args:
        path: The log file (created on first write).
        durability: ``"flush"`` (default) hands each batch to the OS before durable
            code sees its results: safe against the process crashing. ``"fsync"``
            also fsyncs each batch (in a worker thread): safe against the machine
            losing power, at the cost of one fsync per scheduler step.
        limits: How large its entries may be, and when to warn about a job's
            log size (:class:`~duron.LogLimits`; default: 4 MiB per entry).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "flush",
        limits: LogLimits = DEFAULT_LIMITS,
    ) -> None:
        if durability not in ("flush", "fsync"):
            raise ValueError(
                f"durability must be 'flush' or 'fsync', not {durability!r}"
            )
        self.path: Path = Path(path)
        self.durability: Durability = durability
        self.limits: LogLimits = checked_limits(limits)
        self.label: str = str(self.path)
        self._fd: int | None = None  # the current run's file, while we hold it
        self._lock_fd: int | None = None  # the first run's file: holds the lock
        self._run = 0  # the current run's number, while we hold the log
        self._end = 0  # size of the committed log while we hold it

    async def acquire(self) -> None:
        if self._lock_fd is not None:
            raise LogLockedError(job=self.label, holder="this storage object")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise self._error("open", exc) from exc
        try:
            _lock(fd, self.label)
            end = _repair_tail(fd, self.label)
            if self.durability == "fsync":
                _sync_dir(self.path.parent)  # a new file must survive power loss too
        except OSError as exc:
            os.close(fd)
            raise self._error("open", exc) from exc
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = self._fd = fd
        self._end = end
        self._run = 0
        try:
            self._open_current()
        except BaseException:
            await self.release()
            raise

    def _open_current(self) -> None:
        """Move to the chain's current run, finishing a switch a crash cut short."""
        run = current_run(self.path)
        if run > 0:
            self._switch(run, None)
        while True:
            fd = self._fd
            assert fd is not None
            following = self._continued_as(fd)
            if following is None:
                return
            _log.info(
                "log %s: finishing the switch to run %d, cut short by a crash",
                self.label,
                self._run + 1,
            )
            self._switch(self._run + 1, following)

    def _continued_as(self, fd: int) -> bytes | None:
        """The next run's job entry, if this run's last entry is the end of a
        run that continued as new."""
        last = _last_line(fd, self._end)
        if last is None or not last.startswith(b'{"type":"end"'):
            return None
        entry = decode_entry(last, job=self.label, offset=self._end - len(last) - 1)
        if not isinstance(entry, JobFinished) or entry.next is None:
            return None
        return encode_entry(entry.next)

    def _switch(self, run: int, first: bytes | None) -> None:
        """Make run ``run`` the current one, creating its file with ``first``
        (its job entry) if it has none yet; ``None``: it exists."""
        path = run_path(self.path, run)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise self._error("open", exc) from exc
        try:
            end = _repair_tail(fd, str(path))
            if end == 0:
                if first is None:  # created, then the crash came before its entry
                    first = self._job_entry_of(run)
                data = first + b"\n"
                _write_all(fd, data, self.durability == "fsync")
                end = len(data)
                if self.durability == "fsync":
                    _sync_dir(path.parent)
        except OSError as exc:
            os.close(fd)
            raise self._error("open", exc) from exc
        except BaseException:
            os.close(fd)
            raise
        old, self._fd = self._fd, fd
        if old is not None and old != self._lock_fd:
            os.close(old)
        self._run, self._end = run, end

    def _job_entry_of(self, run: int) -> bytes:
        """Run ``run``'s job entry, as the previous run's end entry names it."""
        fd = self._fd
        assert fd is not None
        following = self._continued_as(fd) if self._run == run - 1 else None
        if following is None:
            raise StorageError(
                kind="log",
                store=self.label,
                operation="open",
                detail=(
                    f"{run_path(self.path, run)} is empty, and run {run - 1} did "
                    "not end by continuing as new: it is not a run of this job"
                ),
            )
        return following

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        lock_fd, self._lock_fd = self._lock_fd, None
        if fd is not None and fd != lock_fd:
            os.close(fd)
        if lock_fd is not None:
            os.close(lock_fd)  # closing the descriptor drops the flock

    async def continue_log(
        self,
        entries: Sequence[bytes],
        first: bytes,
        /,
        *,
        inbox_done: Sequence[int] = (),
    ) -> None:
        """End the current run with ``entries`` (the last one names the next
        run), then begin the next run's file with its job entry ``first``."""
        await self.append(entries)
        self._begin_next(first)

    def _begin_next(self, first: bytes) -> None:
        self._switch(self._run + 1, first)

    async def run_count(self) -> int:
        """How many runs the chain holds (0: no log yet)."""
        run = current_run(self.path)
        if run == 0 and not _has_entries(self.path):
            return 0
        return run + 1

    async def read(self) -> AsyncIterator[tuple[int, bytes]]:
        held = self._lock_fd is not None
        async for item in self.read_run(self._run if held else current_run(self.path)):
            yield item

    async def read_run(self, run: int) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of run ``run`` (0: the file the storage was opened with)."""
        try:
            f = open(run_path(self.path, run), "rb")  # noqa: SIM115 - closed in finally
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("read", exc) from exc
        try:
            offset = 0
            rest = b""
            while True:
                chunk = await anyio.to_thread.run_sync(f.read, _CHUNK)
                if not chunk:
                    break
                data = rest + chunk if rest else chunk
                start = 0
                while True:
                    end = data.find(b"\n", start)
                    if end < 0:
                        break
                    yield offset + start, data[start:end]
                    start = end + 1
                offset += start
                rest = data[start:]
            # ``rest`` is a torn tail: never committed, so never read.
        finally:
            f.close()

    async def append(self, entries: Sequence[bytes], /) -> None:
        if self.durability == "flush":
            self.append_nowait(entries)
            return
        fd = self._writer()
        if not entries:
            return  # an empty write would put an empty, undecodable line in the log
        data = b"\n".join(entries) + b"\n"
        try:
            await anyio.to_thread.run_sync(_write_all, fd, data, True)
        except OSError as exc:
            raise self._failed(fd, exc) from exc
        self._end += len(data)

    def append_nowait(self, entries: Sequence[bytes], /) -> bool:
        """Append at once in ``"flush"`` mode; in ``"fsync"`` mode the fsync would
        block the event loop, so this writes nothing and returns False."""
        if self.durability == "fsync":
            return False
        fd = self._writer()
        if entries:
            data = b"\n".join(entries) + b"\n"
            try:
                _write_all(fd, data, False)
            except OSError as exc:
                raise self._failed(fd, exc) from exc
            self._end += len(data)
        return True

    def _writer(self) -> int:
        fd = self._fd
        if fd is None:
            raise StorageError(
                kind="log",
                store=self.label,
                operation="append",
                detail="not open for writing (acquire() first)",
            )
        return fd

    def _failed(self, fd: int, exc: OSError) -> StorageError:
        self._undo_partial_write(fd)
        return self._error("append", exc)

    def _error(self, operation: str, exc: OSError) -> StorageError:
        """The file system's error, as a passing one when the disk may come back."""
        cls = StoreUnavailableError if exc.errno in _PASSING else StorageError
        return cls(kind="log", store=self.label, operation=operation, detail=str(exc))

    def _undo_partial_write(self, fd: int) -> None:
        # A failed write may have left part of the batch behind; the next append
        # would be glued to it. Cut back to the committed end, or, if even that
        # fails, give up the lease so that the next acquire() repairs the tail.
        try:
            os.ftruncate(fd, self._end)
        except OSError:
            self._fd = None
            if fd == self._lock_fd:
                self._lock_fd = None
            os.close(fd)

    def __repr__(self) -> str:
        return f"<FileLogStorage {self.label} durability={self.durability}>"


def run_path(path: Path, run: int) -> Path:
    """The file of run ``run`` of the job whose log is ``path``: ``path`` itself
    for run 0, then ``log.1.jsonl``, ``log.2.jsonl``... (``log.1`` for ``log``)."""
    if run == 0:
        return path
    return path.with_name(f"{_stem(path)}.{run}{path.suffix}")


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(path.suffix)] if path.suffix else path.name


def current_run(path: Path) -> int:
    """The highest run of ``path``'s chain that has a file (0: none but ``path``)."""
    pattern = re.compile(rf"{re.escape(_stem(path))}\.([0-9]+){re.escape(path.suffix)}")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return 0
    runs = [int(m.group(1)) for n in names if (m := pattern.fullmatch(n))]
    return max(runs, default=0)


def _has_entries(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _last_line(fd: int, end: int) -> bytes | None:
    """The last line of the first ``end`` bytes (which end with a newline)."""
    if end == 0:
        return None
    pos = end - 1  # the newline
    chunks: list[bytes] = []
    while pos > 0:
        step = min(pos, 64 * 1024)
        block = os.pread(fd, step, pos - step)
        nl = block.rfind(b"\n")
        if nl >= 0:
            chunks.append(block[nl + 1 :])
            break
        chunks.append(block)
        pos -= step
    return b"".join(reversed(chunks))


def _write_all(fd: int, data: bytes, sync: bool) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    if sync:
        os.fsync(fd)


def _lock(fd: int, label: str) -> None:
    if fcntl is None:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise LogLockedError(job=label) from exc
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise LogLockedError(job=label, holder="another process or job") from exc


def _sync_dir(path: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _repair_tail(fd: int, label: str) -> int:
    """Cut off a last line that has no newline: a write the crash interrupted.

    Returns:
        The size of the log once repaired.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    pos = size
    while pos > 0:
        step = min(pos, 64 * 1024)
        block = os.pread(fd, step, pos - step)
        if pos == size and block.endswith(b"\n"):
            return size
        nl = block.rfind(b"\n")
        if nl >= 0:
            keep = pos - step + nl + 1
            break
        pos -= step
    else:
        keep = 0
    _log.warning(
        "log %s: removed a torn last entry (%d bytes at offset %d) left by a crash",
        label,
        size - keep,
        keep,
    )
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return keep
