"""How large a log may grow: the size limit per entry and the warning per job.

Every storage carries a :class:`LogLimits` (``limits=`` on its constructor; a
storage written elsewhere that has none gets :data:`DEFAULT_LIMITS`). The limit
per entry is checked on the encoded bytes, before anything is written, in the
two places entries are made: the job entry (:meth:`~duron.DurableFn.job_entry`,
for ``job.start()`` and ``store.submit()``) and every other entry
(:class:`~duron._log_writer.LogWriter`). Values the host sends into a job are
also measured on the host's side first (:func:`input_entry_size`), so that the
sender gets the error and the job never meets it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from duron._log import OpCompleted, OpEmitted, encode_entry

if TYPE_CHECKING:
    from duron._entries import Entry
    from duron._json import JSONValue
    from duron._operations import Op

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_ENTRY_SIZE",
    "LogLimits",
    "LogSize",
    "LogSizeWatch",
    "input_entry_size",
    "limits_of",
]

DEFAULT_MAX_ENTRY_SIZE = 4 * 1024 * 1024
"""4 MiB: the largest log entry a storage takes unless told otherwise."""

_log = logging.getLogger("duron")

# Live entries are stamped with the time at their write, unknown when the host
# measures a value it sends: an entry's ``t`` takes at most this many more
# characters than ``0.0`` (``-12345678901.234567``, 17 significant digits).
_T_EXTRA = 16


@dataclass(frozen=True, slots=True)
class LogLimits:
    """How large a job's log may grow, given to a storage (``limits=``).

    Attributes:
        max_entry_size: The largest entry, encoded, in bytes (default 4 MiB). A
            value that would make a larger entry (an effect's result, a job's
            arguments, a value sent in) fails with
            :class:`~duron.PayloadTooLargeError` and nothing is written.
        warn_log_size: Log a warning (logger ``duron``) once per run when a
            job's log grows past this many bytes; ``None`` (default): never.

    Raises:
        ValueError: A size that is not a positive integer.
    """

    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE
    warn_log_size: int | None = None

    def __post_init__(self) -> None:
        _check_size("max_entry_size", self.max_entry_size)
        if self.warn_log_size is not None:
            _check_size("warn_log_size", self.warn_log_size)


def _check_size(name: str, value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be a positive number of bytes, not {value!r}")


DEFAULT_LIMITS = LogLimits()
"""The limits of a storage that names none."""


@dataclass(frozen=True, slots=True)
class LogSize:
    """How much a job's log holds (``store.log_sizes()``, ``duron jobs list --sizes``).

    Attributes:
        entries: How many entries, the job entry included (of the current run,
            for a job that continued as new).
        bytes: Their total size as stored (encoded JSON, without line ends).
        runs: How many runs the job's chain holds: 1 unless it continued as new.
    """

    entries: int
    bytes: int
    runs: int = 1


def limits_of(storage: object) -> LogLimits:
    """The limits ``storage`` carries (``storage.limits``), else the defaults."""
    limits = getattr(storage, "limits", None)
    return limits if isinstance(limits, LogLimits) else DEFAULT_LIMITS


def checked_limits(limits: object) -> LogLimits:
    """``limits`` as a storage constructor takes it.

    Raises:
        TypeError: Not a :class:`LogLimits`.
    """
    if not isinstance(limits, LogLimits):
        raise TypeError(
            f"limits must be a duron.LogLimits, not {type(limits).__qualname__}"
        )
    return limits


def input_entry_size(op: Op, data: JSONValue, *, emit: bool) -> int:
    """The size of the entry that will record ``data`` for ``op`` (at most that)."""
    entry: Entry
    if emit:
        entry = OpEmitted(op.id, 0.0, data)
    else:  # a future's result; named in full, as when no start entry was written
        entry = OpCompleted(op.id, 0.0, data, None, op.kind, op.name, op.inputs)
    return len(encode_entry(entry)) + _T_EXTRA


class LogSizeWatch:
    """Counts a job's log bytes and warns once when they pass ``warn_log_size``."""

    __slots__ = ("_label", "_threshold", "size")

    def __init__(self, label: str, threshold: int) -> None:
        self._label = label
        self._threshold = threshold
        self.size: int = 0

    def add(self, size: int) -> None:
        """Count ``size`` more bytes; the warning, the first time they pass."""
        before = self.size
        self.size = after = before + size
        if before <= self._threshold < after:
            _log.warning(
                "duron: job %s: its log has grown past %s bytes (warn_log_size); "
                "every resume replays all of it",
                self._label,
                f"{self._threshold:,}",
            )
