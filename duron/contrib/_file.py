"""The embedded default: one job's log in a JSON Lines file.

Each entry is one line. A batch is written with a single ``write`` on a file opened
for appending, so a crash leaves a prefix of the batch and at most one torn line at
the very end; :meth:`FileLogStorage.acquire` cuts that torn line off before the next
append. The writer holds an OS lock (``flock``) on the file, so a second process (or a
second job in this process) gets :class:`~duron.LogLockedError`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

import anyio.to_thread

from duron._errors import LogLockedError, StorageError, StoreUnavailableError
from duron._limits import DEFAULT_LIMITS, LogLimits, checked_limits

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Durability", "FileLogStorage"]

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
        self._fd: int | None = None
        self._end = 0  # size of the committed log while we hold it

    async def acquire(self) -> None:
        if self._fd is not None:
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
        self._fd = fd
        self._end = end

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    async def read(self) -> AsyncIterator[tuple[int, bytes]]:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed in finally, across yields
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
            os.close(fd)

    def __repr__(self) -> str:
        return f"<FileLogStorage {self.label} durability={self.durability}>"


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
