"""Writing a job's entries: encoded in one place, appended as one batch.

:class:`LogWriter` is the driver's only way to the storage's write side. Each batch
the engine composes becomes one ``append`` (group commit: one write, and under the
durable sync mode one fsync, per step of the job), or, for the shortcut that
commits an effect from inside ``ctx.run``, one ``append_nowait`` when the storage
offers it. An entry orjson refuses (an integer past 64 bits), or one larger than
the storage's ``limits.max_entry_size``, is named as the payload it holds, before
anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from duron._errors import (
    DuronError,
    InternalError,
    PayloadEncodeError,
    PayloadTooLargeError,
    UsageError,
)
from duron._limits import LogSizeWatch, limits_of
from duron._log import encode_entry
from duron._storage import chain_of, nowait_appender

if TYPE_CHECKING:
    from duron._entries import Entry, JobStarted
    from duron._operations import Op
    from duron._storage import LogStorage

__all__ = ["LogWriter"]


def _ended_positions(entries: list[Entry]) -> list[int]:
    return [e.id for e in entries if e.type == "done"]


class LogWriter:
    """Appends entries to one job's storage.

    Args:
        storage: The job's log.
        function: The durable function's name, for errors.
        op_at: The pending operation at a position, for errors.
    """

    __slots__ = (
        "_function",
        "_max_size",
        "_nowait",
        "_op_at",
        "can_append_now",
        "on_written",
        "storage",
        "watch",
    )

    def __init__(
        self,
        storage: LogStorage,
        function: str,
        op_at: Callable[[int], Op | None],
    ) -> None:
        self.storage: LogStorage = storage
        self._function = function
        self._op_at = op_at
        self._nowait: Callable[[Sequence[bytes]], bool] | None = nowait_appender(
            storage
        )
        # Whether append_now() may succeed (the storage can append without waiting).
        self.can_append_now: bool = self._nowait is not None
        # Told, after each write, the positions it recorded an end for (an
        # observed run's driver sets it).
        self.on_written: Callable[[list[int]], None] | None = None
        limits = limits_of(storage)
        self._max_size = limits.max_entry_size
        # Counts the log's bytes (read and written) when a warning size is set.
        self.watch: LogSizeWatch | None = (
            None
            if limits.warn_log_size is None
            else LogSizeWatch(storage.label, limits.warn_log_size)
        )

    async def append(self, entries: list[Entry]) -> None:
        """Append ``entries`` as one batch; returns once the storage committed it."""
        await self.storage.append(self.encode(entries))
        if self.on_written is not None:
            self.on_written(_ended_positions(entries))

    async def continue_log(
        self, entries: list[Entry], first: JobStarted, inbox_done: list[int]
    ) -> None:
        """Append ``entries`` (the last one the end entry naming the next run) and
        start the job's next run with ``first``: the storage's ``continue_log``.

        Raises:
            UsageError: The storage keeps no chain of logs.
        """
        chained = chain_of(self.storage)
        if chained is None:
            raise UsageError(
                f"job {self.storage.label}: continue_as_new() needs a storage that "
                f"keeps a chain of logs (a continue_log method); "
                f"{type(self.storage).__name__} has none"
            )
        await chained.continue_log(
            self.encode(entries), encode_entry(first), inbox_done=inbox_done
        )
        if self.on_written is not None:
            self.on_written(_ended_positions(entries))

    def append_now(self, entries: list[Entry]) -> bool:
        """Append without waiting, if the storage can; False (nothing written) if not."""
        nowait = self._nowait
        if nowait is None:
            return False
        if not nowait(self.encode(entries)):
            self._nowait = None  # this storage never can (e.g. fsync mode)
            self.can_append_now = False
            return False
        if self.on_written is not None:
            self.on_written(_ended_positions(entries))
        return True

    def encode(self, entries: list[Entry]) -> list[bytes]:
        """The entries as stored bytes.

        Raises:
            PayloadEncodeError: An entry holds a value JSON cannot (orjson refuses
                integers past 64 bits).
            PayloadTooLargeError: An entry is larger than the storage's
                ``limits.max_entry_size``.
        """
        try:
            data = [encode_entry(e) for e in entries]
        except TypeError:
            raise self._unwritable(entries) from None
        if max(map(len, data), default=0) > self._max_size:
            raise self._oversize(entries, data)
        watch = self.watch
        if watch is not None:
            watch.add(sum(map(len, data)))
        return data

    def _unwritable(self, entries: list[Entry]) -> DuronError:
        """Name the payload in ``entries`` that cannot be written to the log."""
        label = self.storage.label
        for entry in entries:
            try:
                encode_entry(entry)
            except TypeError as exc:
                err = PayloadEncodeError(
                    what=self._what(entry),
                    type_name=f"{entry.type} entry",
                    detail=f"cannot be written to the log: {exc}",
                    position=getattr(entry, "id", None),
                    job=label,
                )
                err.__cause__ = exc
                return err
        return InternalError(f"job {label}: a batch of entries failed to encode")

    def _oversize(self, entries: list[Entry], data: list[bytes]) -> DuronError:
        """Name the payload in ``entries`` whose entry is over the size limit."""
        limit = self._max_size
        for entry, raw in zip(entries, data, strict=True):
            if len(raw) > limit:
                return PayloadTooLargeError(
                    what=self._what(entry),
                    size=len(raw),
                    limit=limit,
                    type_name=f"{entry.type} entry",
                    position=getattr(entry, "id", None),
                    job=self.storage.label,
                )
        return InternalError(f"job {self.storage.label}: no entry is over the limit")

    def _what(self, entry: Entry) -> str:
        """Which payload ``entry`` records, as errors name it."""
        if entry.type == "end":
            if getattr(entry, "next", None) is not None:
                return f"arguments of durable function {self._function}'s next run"
            return f"result of durable function {self._function}"
        op_id: int | None = getattr(entry, "id", None)
        op = self._op_at(op_id) if op_id is not None else None
        kind = getattr(entry, "kind", None) or (op.kind if op is not None else None)
        name = getattr(entry, "name", None) or (
            op.name if op is not None else f"operation #{op_id}"
        )
        if entry.type == "start":
            return f"inputs of {name}"
        if kind == "input":
            return f"value for {name!r}"
        if kind == "future":
            return f"result for future {str(op_id)!r} ({name})"
        if entry.type == "emit":
            return f"value yielded by streaming effect {name}"
        if getattr(entry, "error", None) is not None:
            return f"exception raised by effect {name}"
        return f"result of effect {name}"
