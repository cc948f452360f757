"""A log kept in memory: for tests, examples and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from duron._errors import LogLockedError, StorageError
from duron._limits import DEFAULT_LIMITS, LogLimits, checked_limits
from duron._log import Entry, decode_entry

__all__ = ["MemoryLogStorage"]


class MemoryLogStorage:
    """Keeps the log in a list; nothing survives the process.

    Args:
        entries: Encoded entries to start from (e.g. copied from another log).
        label: Name used in error messages.
        limits: How large its entries may be, and when to warn about a job's
            log size (:class:`~duron.LogLimits`; default: 4 MiB per entry).
    """

    def __init__(
        self,
        entries: Sequence[bytes] = (),
        *,
        label: str = "<memory>",
        limits: LogLimits = DEFAULT_LIMITS,
    ) -> None:
        self.label = label
        self.limits: LogLimits = checked_limits(limits)
        self._entries: list[bytes] = list(entries)
        self._held = False
        # The logs of the runs before the current one (a job that continued as new).
        self.previous_runs: list[list[bytes]] = []

    async def acquire(self) -> None:
        if self._held:
            raise LogLockedError(job=self.label, holder="another job in this process")
        self._held = True

    async def release(self) -> None:
        self._held = False

    async def read(self) -> AsyncIterator[tuple[int, bytes]]:
        i = 0
        entries = self._entries
        while i < len(entries):  # entries appended while reading are read too
            yield i, entries[i]
            i += 1

    async def append(self, entries: Sequence[bytes], /) -> None:
        self.append_nowait(entries)

    def append_nowait(self, entries: Sequence[bytes], /) -> bool:
        """Append at once (a memory log never waits); returns True."""
        if not self._held:
            raise StorageError(
                kind="log",
                store=self.label,
                operation="append",
                detail="not open for writing (acquire() first)",
            )
        # A copy, not the caller's object: orjson's output keeps its whole growth
        # buffer (~4 KiB), which a log held in memory would keep per entry.
        self._entries.extend([bytes(memoryview(e)) for e in entries])
        return True

    async def continue_log(
        self,
        entries: Sequence[bytes],
        first: bytes,
        /,
        *,
        inbox_done: Sequence[int] = (),
    ) -> None:
        """End the current run with ``entries`` and begin the next one with its
        job entry ``first`` (one step: nothing else runs in between)."""
        self.append_nowait(entries)
        self.previous_runs.append(self._entries)
        self._entries = [bytes(first)]

    async def run_count(self) -> int:
        """How many runs the chain holds (0: an empty log)."""
        return len(self.previous_runs) + (1 if self._entries else 0)

    async def read_run(self, run: int) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of run ``run`` (0: the first)."""
        runs = self.previous_runs
        entries = runs[run] if 0 <= run < len(runs) else None
        if entries is None:
            if run != len(runs):
                return
            entries = self._entries
        for i, entry in enumerate(entries):
            yield i, entry

    @property
    def raw(self) -> list[bytes]:
        """The stored entries, as encoded bytes (a copy)."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """The stored entries, decoded."""
        return [
            decode_entry(e, job=self.label, offset=i)
            for i, e in enumerate(self._entries)
        ]

    def __repr__(self) -> str:
        runs = f" run={len(self.previous_runs)}" if self.previous_runs else ""
        return f"<MemoryLogStorage {self.label}{runs} entries={len(self._entries)}>"
