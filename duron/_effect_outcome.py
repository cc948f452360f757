"""How a live run of an effect ended, as what the driver records.

An effect that returned gives a :class:`~duron._operations.Done` whose payload
went through :func:`~duron._codec.roundtrip` (durable code gets exactly what a
replay will rebuild), or, for a value that cannot be recorded, a :class:`Fatal`
outcome that fails the job with a :class:`~duron.PayloadEncodeError`. An effect
that raised gives a ``Done`` holding the error, or nothing when the job itself
cancelled it (:func:`cancelled_by_job`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from duron._codec import roundtrip
from duron._errors import PayloadEncodeError
from duron._operations import Attempted, Done, Emitted, Op
from duron._recorded_errors import error_info

if TYPE_CHECKING:
    from duron._codec import Codec

__all__ = ["Fatal", "Report", "cancelled_by_job", "raised_outcome", "result_outcome"]


@dataclass(slots=True, eq=False)
class Fatal:
    """The job cannot go on: the driver raises ``error`` (nothing more is written)."""

    error: BaseException


Report = Callable[[Done | Emitted | Attempted | Fatal], None]
"""How a live run hands an outcome to the driver."""


def cancelled_by_job(op: Op) -> bool:
    """Whether the cancellation ending ``op``'s live run came from the job.

    The one rule: the job marks an operation ``stopped`` before it cancels its
    task (durable code gave up waiting, or the job is stopping). A run that ends
    cancelled without that mark was cancelled by the effect itself or by someone
    else it gave its task to: that is its outcome, recorded like any other error.
    """
    return op.stopped


def raised_outcome(op: Op, exc: BaseException) -> Done | None:
    """The outcome of an effect that raised ``exc``: an error to record, or None
    when there is nothing to record (the job stopped it; a ``KeyboardInterrupt``
    and the like, which go on up)."""
    if isinstance(exc, asyncio.CancelledError):
        if cancelled_by_job(op):
            return None
    elif not isinstance(exc, Exception):
        return None
    return Done(op, None, error_info(exc), cause=exc)


def result_outcome(op: Op, value: Any, codec: Codec, label: str) -> Done | Fatal:
    """The outcome of an effect that returned ``value``: its encoded result, or the
    job's failure when the value cannot be recorded as annotated."""
    spec = op.spec
    try:
        data, decoded = roundtrip(
            codec,
            value,
            spec.result_annotation,
            what=spec.result_what,
            job=label,
            position=op.id,
        )
    except PayloadEncodeError as err:
        return Fatal(err)
    return Done(op, data, decoded=decoded)
