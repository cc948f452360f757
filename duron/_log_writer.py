"""Writing a job's entries: encoded in one place, appended as one batch.

:class:`LogWriter` is the driver's only way to the storage's write side. Each batch
the engine composes becomes one ``append`` (group commit: one write, and under the
durable sync mode one fsync, per step of the job), or, for the shortcut that
commits an effect from inside ``ctx.run``, one ``append_nowait`` when the storage
offers it. An entry orjson refuses (an integer past 64 bits) is named as the
payload it holds, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from duron._errors import DuronError, InternalError, PayloadEncodeError
from duron._log import encode_entry
from duron._storage import nowait_appender

if TYPE_CHECKING:
    from duron._entries import Entry
    from duron._storage import LogStorage

__all__ = ["LogWriter"]


def _ended_positions(entries: list[Entry]) -> list[int]:
    return [e.id for e in entries if e.type == "done"]


class LogWriter:
    """Appends entries to one job's storage.

    Args:
        storage: The job's log.
        function: The durable function's name, for errors.
        name_of: The name of the operation at a position, for errors.
    """

    __slots__ = (
        "_function",
        "_name_of",
        "_nowait",
        "can_append_now",
        "on_written",
        "storage",
    )

    def __init__(
        self,
        storage: LogStorage,
        function: str,
        name_of: Callable[[int], str | None],
    ) -> None:
        self.storage: LogStorage = storage
        self._function = function
        self._name_of = name_of
        self._nowait: Callable[[Sequence[bytes]], bool] | None = nowait_appender(
            storage
        )
        # Whether append_now() may succeed (the storage can append without waiting).
        self.can_append_now: bool = self._nowait is not None
        # Told, after each write, the positions it recorded an end for (an
        # observed run's driver sets it).
        self.on_written: Callable[[list[int]], None] | None = None

    async def append(self, entries: list[Entry]) -> None:
        """Append ``entries`` as one batch; returns once the storage committed it."""
        await self.storage.append(self.encode(entries))
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
        """
        try:
            return [encode_entry(e) for e in entries]
        except TypeError:
            raise self._unwritable(entries) from None

    def _unwritable(self, entries: list[Entry]) -> DuronError:
        """Name the payload in ``entries`` that cannot be written to the log."""
        label = self.storage.label
        for entry in entries:
            try:
                encode_entry(entry)
            except TypeError as exc:
                op_id: int | None = getattr(entry, "id", None)
                name = getattr(entry, "name", None) or (
                    (self._name_of(op_id) if op_id is not None else None)
                    or f"operation #{op_id}"
                )
                if entry.type == "end":
                    what = f"result of durable function {self._function}"
                elif entry.type == "start":
                    what = f"inputs of {name}"
                elif entry.type == "emit":
                    what = f"value yielded by streaming effect {name}"
                elif getattr(entry, "error", None) is not None:
                    what = f"exception raised by effect {name}"
                else:
                    what = f"result of effect {name}"
                err = PayloadEncodeError(
                    what=what,
                    type_name=f"{entry.type} entry",
                    detail=f"cannot be written to the log: {exc}",
                    position=op_id,
                    job=label,
                )
                err.__cause__ = exc
                return err
        return InternalError(f"job {label}: a batch of entries failed to encode")
