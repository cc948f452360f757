"""The storage protocol: where a job's log lives.

A log is an ordered list of entries, each an opaque JSON document (bytes) produced by
Duron. A backend stores them in order and gives them back in order; it knows nothing
else about them. Four operations, all async:

* :meth:`LogStorage.acquire` / :meth:`LogStorage.release`: become (stop being) the
  single writer. A second writer gets :class:`~duron.LogLockedError`.
* :meth:`LogStorage.read`: every committed entry, oldest first, with its position.
* :meth:`LogStorage.append`: add a batch of entries, all-or-prefix: after a crash the
  log holds a prefix of the batch, never a damaged entry in the middle.

A backend whose appends never wait (a memory log, a file written without fsync)
may also offer ``append_nowait(entries) -> bool``: the same commit, done before
returning, or ``False`` with nothing written when it would have to wait. The job
driver then commits an effect that finished at once without leaving durable code
(see :func:`nowait_appender`).

A storage written under a lease that can run out (the SQL job stores) also offers
``lease_fresh() -> bool`` and ``async confirm_lease()`` (see :func:`lease_of`): the
driver starts no effect on a lease that may have expired without confirming it
first, so a process that stalled past its lease never acts after another worker
took its job over.

A backend that keeps a **chain of logs** (every store Duron ships) also offers
``continue_log``, ``run_count`` and ``read_run`` (see :class:`ChainedLog` and
:func:`chain_of`): a job that continues as new ends its current log and goes on
in a fresh one, and ``read()`` gives the current run's entries only.

A backend may carry ``limits``, a :class:`~duron.LogLimits`: the largest entry
it takes and when to warn about a log's size (without it, the defaults: 4 MiB per
entry). The driver checks the limit before it appends: a backend never sees an
entry over it.

Every backend passes the same contract test suite (``tests/test_storage_contract.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["ChainedLog", "LogStorage", "chain_of", "nowait_appender"]


@runtime_checkable
class LogStorage(Protocol):
    """Where one job's log lives. Implement this to add a backend.

    Attributes:
        label: How errors and tools name this log (a path, a job id).
    """

    label: str

    async def acquire(self) -> None:
        """Become the log's only writer, repairing a crash's torn tail if any.

        Raises:
            LogLockedError: Another writer (any process) holds the log.
        """
        ...

    async def release(self) -> None:
        """Stop being the writer; safe to call when not holding the log."""
        ...

    def read(self) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(position, entry)`` for every committed entry, oldest first.

        ``position`` locates the entry for error messages (a byte offset for a
        file, a sequence number for a table). Reading does not need the lease.

        Raises:
            CorruptLogError: Stored data is damaged (not a torn tail).
        """
        ...

    async def append(self, entries: Sequence[bytes], /) -> None:
        """Append a batch of entries, in order, as one write.

        Returns once the batch is committed to the backend's durability level.

        Raises:
            StorageError: The write failed; nothing after the committed prefix.
            LeaseLostError: This writer no longer owns the log.
        """
        ...


class ChainedLog(Protocol):
    """A log storage that keeps a job's runs as a chain of logs (optional).

    ``read()`` yields the current run's entries; a job that calls
    ``ctx.continue_as_new(...)`` ends its run with :meth:`continue_log`.
    """

    async def continue_log(
        self, entries: Sequence[bytes], first: bytes, /, *, inbox_done: Sequence[int]
    ) -> None:
        """Append ``entries``, whose last one is the end entry naming the next
        run, and begin the next run's log with its job entry ``first``.

        Atomic in effect: once the end entry is committed the switch is decided,
        and a storage that cannot create the next log in the same commit finishes
        it the next time the log is acquired (``first`` is what the end entry's
        ``next`` holds). From then on ``read()`` yields the new run's entries.

        Args:
            entries: The last entries of the current run.
            first: The next run's job entry.
            inbox_done: Inbox items the current run recorded (a storage with an
                inbox deletes them with the switch: the next log does not list
                them, so they must not be delivered again).
        """
        ...

    async def run_count(self) -> int:
        """How many runs the chain holds (1 for a job that never continued, or
        0 for an empty log)."""
        ...

    def read_run(self, run: int) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of run ``run`` (0: the first), like :meth:`LogStorage.read`
        (nothing for a run the chain does not hold, or no longer keeps)."""
        ...


def chain_of(storage: LogStorage) -> ChainedLog | None:
    """``storage`` as a :class:`ChainedLog`, if it keeps a chain of logs."""
    if callable(getattr(storage, "continue_log", None)):
        return storage  # type: ignore[return-value]
    return None


def nowait_appender(storage: LogStorage) -> Callable[[Sequence[bytes]], bool] | None:
    """``storage.append_nowait`` when it can stand in for ``storage.append``.

    Only when one class defines both: a subclass that overrides ``append`` (to
    wait, count or mirror writes) and not ``append_nowait`` keeps every write
    going through its ``append``.
    """
    nowait = getattr(storage, "append_nowait", None)
    if nowait is None:
        return None
    cls = type(storage)
    if _defined_in(cls, "append") is not _defined_in(cls, "append_nowait"):
        return None
    return nowait  # type: ignore[no-any-return]


class Lease(Protocol):
    """The lease a storage writes under, as the driver checks it before an effect."""

    def lease_fresh(self) -> bool:
        """Whether the lease surely holds for a while yet (no I/O)."""
        ...

    async def confirm_lease(self) -> None:
        """Renew the lease now, or raise :class:`~duron.LeaseLostError`."""
        ...


def lease_of(storage: LogStorage) -> Lease | None:
    """The storage's lease, if it writes under one (see the module docstring)."""
    if callable(getattr(storage, "lease_fresh", None)) and callable(
        getattr(storage, "confirm_lease", None)
    ):
        return storage  # type: ignore[return-value]
    return None


def _defined_in(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)
