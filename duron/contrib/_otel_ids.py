"""The ids Duron gives the spans of a job: derived from the job and the operation,
so that every run of a job, in any process, lands in one trace, and an attempt
redone after a crash is sent under the id of the one that was cut short."""

from __future__ import annotations

import contextvars
import hashlib
from typing import TYPE_CHECKING, Any

import duron

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = [
    "SCOPE",
    "JobIds",
    "derived",
    "next_span_id",
    "next_trace_id",
    "tracer_with_job_ids",
]

SCOPE = "duron"
"""The instrumentation scope of Duron's tracer and meter."""

# Set around the start of a span whose ids Duron derives; read by the id generator
# of Duron's own tracer (see JobIds).
next_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "duron_otelnext_span_id", default=None
)
next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "duron_otelnext_trace_id", default=None
)


def derived(seed: str, job: str, what: str, size: int) -> int:
    """A non-zero id of ``size`` bytes that only the job and ``what`` decide."""
    digest = hashlib.blake2b(
        f"{seed}\x00{job}\x00{what}".encode(), digest_size=size
    ).digest()
    return int.from_bytes(digest, "big") or 1


class JobIds:
    """The id generator of Duron's tracer: the span id Duron derived when it set
    one (:data:`next_span_id`), else the SDK's own generator's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def generate_span_id(self) -> int:
        fixed = next_span_id.get()
        if fixed is not None:
            return fixed
        return int(self._inner.generate_span_id())

    def generate_trace_id(self) -> int:
        fixed = next_trace_id.get()
        if fixed is not None:
            return fixed
        return int(self._inner.generate_trace_id())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def tracer_with_job_ids(provider: Any) -> tuple[Tracer, bool]:
    """Duron's tracer, and whether it takes span ids from Duron.

    The SDK's tracer keeps its id generator as the public attribute
    ``id_generator``; Duron wraps the one of its own tracer only (other
    instrumentations are untouched). Another SDK, or none, keeps its own ids.
    """
    tracer = provider.get_tracer(SCOPE, duron.__version__)
    inner = getattr(tracer, "id_generator", None)
    if inner is None:
        return tracer, False
    if not isinstance(inner, JobIds):
        tracer.id_generator = JobIds(inner)
    return tracer, True
