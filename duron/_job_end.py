"""How a job's durable code ended: as the log's end entry records it, as ``wait()``
returns it, and in words for ``duron verify``.

The durable function runs as one task on the durable loop (the root). When it is
done, :func:`code_end` turns its result or exception into what the end entry
holds, and :func:`outcome_from` turns a recorded end back into what ``wait()``
returns or raises: the same path live and on replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from duron._codec import decode_recorded, roundtrip
from duron._continue import ContinueAsNew
from duron._entries import ErrorInfo, JobStarted
from duron._errors import DuronError, EffectError, JobCancelledError, StorageError
from duron._recorded_errors import error_info, rebuild

if TYPE_CHECKING:
    import asyncio

    from duron._durable import DurableFn
    from duron._json import JSONValue

__all__ = [
    "JobOutcome",
    "code_continued",
    "code_end",
    "code_ending",
    "code_failure",
    "outcome_from",
]


@dataclass(slots=True)
class JobOutcome:
    """How a run ended: a decoded result, or an exception for ``wait()`` to raise."""

    result: Any = None
    error: BaseException | None = None
    recorded_error: ErrorInfo | None = None
    position: int = 0
    finished: bool = True  # False: a replay-only run stopped where the log ends
    # The run ended by continuing as new: the next run's job entry.
    continued: JobStarted | None = None


def code_end(
    root: asyncio.Task[Any] | None,
    dfn: DurableFn[..., Any],
    label: str,
    why: str = "",
) -> tuple[JSONValue, ErrorInfo | None]:
    """How durable code ended (``root`` is done), as the end entry records it: its
    encoded result, or its error (``why``: what cancelled it, for the message).

    Raises:
        DuronError: Durable code failed with one (a bug to fix, not the job's
            result: the run fails and the log stays resumable).
        PayloadEncodeError: The result cannot be recorded as annotated.
    """
    assert root is not None
    if root.cancelled():
        # Its message names the job; ends compare cancellations by type alone.
        cancelled = JobCancelledError(
            f"job {label} was cancelled" + (f" ({why})" if why else "")
        )
        return None, error_info(cancelled)
    exc = root.exception()
    if type(exc) is ContinueAsNew:
        return None, None  # the end entry carries the next run instead
    if exc is not None:
        if code_failure(root) is not None:
            raise exc
        return None, error_info(exc)
    data, _ = roundtrip(
        dfn.codec,
        root.result(),
        dfn.sig.return_annotation,
        what=f"result of durable function {dfn.name}",
        job=label,
    )
    return data, None


def outcome_from(
    dfn: DurableFn[..., Any],
    label: str,
    position: int,
    result: JSONValue,
    error: ErrorInfo | None,
    cause: BaseException | None,
) -> JobOutcome:
    """What ``wait()`` returns or raises for a recorded end (``cause``: the live
    exception, chained to the rebuilt one on a first run).

    Raises:
        PayloadDecodeError: The recorded result no longer validates.
    """
    if error is not None:
        return JobOutcome(
            error=rebuild(error, cause), recorded_error=error, position=position
        )
    value = decode_recorded(
        dfn.codec,
        result,
        dfn.sig.return_annotation,
        what=f"result of durable function {dfn.name}",
        job=label,
    )
    return JobOutcome(result=value, position=position)


def code_continued(root: asyncio.Task[Any] | None) -> JobStarted | None:
    """The next run's job entry, if durable code ended by continuing as new."""
    if root is None or not root.done() or root.cancelled():
        return None
    exc = root.exception()
    return exc.entry if type(exc) is ContinueAsNew else None


def code_ending(root: asyncio.Task[Any] | None) -> str | None:
    """How durable code ended, in words (``None`` while it still runs)."""
    if root is None or not root.done():
        return None
    if root.cancelled():
        return "is cancelled"
    exc = root.exception()
    if exc is None:
        return "returns"
    if type(exc) is ContinueAsNew:
        return f"continues as new with {exc.arguments!r}"
    return f"raises {type(exc).__qualname__}({str(exc)!r})"


def code_failure(root: asyncio.Task[Any] | None) -> DuronError | None:
    """The Duron error that stopped durable code itself (a bug of today's code: an
    input that cannot be encoded, an API misused), if one did."""
    if root is None or not root.done() or root.cancelled():
        return None
    exc = root.exception()
    # A storage error raised by durable code itself is not the job's storage
    # failing (that never reaches durable code): it is the job's own failure.
    if isinstance(exc, DuronError) and not isinstance(exc, (EffectError, StorageError)):
        return exc
    return None
