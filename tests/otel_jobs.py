"""The job of the OpenTelemetry crash test, and its worker process.

``python tests/otel_jobs.py DB SPANS SIDE`` runs a worker, instrumented with
``duron.contrib.otel``, on the SQLite store ``DB`` until no job is pending or
running. Every span it ends is appended to ``SPANS`` as one JSON line, at once
(``SimpleSpanProcessor``): a SIGKILL loses no span that was sent. Every attempt
of the ``step`` effect appends ``start KEY REQUEST TRACE SPAN`` to ``SIDE`` when
it begins (the request id it sees, the trace and span id current inside it), then
works for a while, so a test can kill the process while a given step runs.

This file is not a test module (pytest collects ``test_*.py`` only).
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import duron
import duron.contrib.otel
from duron.contrib.storage import SQLiteStore

STEPS = 8
LEASE = 1.0
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def note(line: str) -> None:
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(line + "\n")


@duron.effect
async def step(key: int) -> int:
    ctx = trace.get_current_span().get_span_context()
    note(f"start {key} {request_id.get('-')} {ctx.trace_id:032x} {ctx.span_id:016x}")
    await anyio.sleep(0.15)
    return key * key


@duron.durable
async def steps(ctx: duron.Context, n: int) -> int:
    total = 0
    for key in range(n):
        total += await ctx.run(step, key)
    return total


class FileExporter(SpanExporter):
    """A span exporter appending each span to a file as one JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as f:
            for span in spans:
                f.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS


def span_record(span: ReadableSpan) -> dict[str, Any]:
    assert span.context is not None
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


async def work(db: str) -> None:
    store = SQLiteStore(db, lease=LEASE)
    async with duron.Worker(store, [steps], poll_interval=0.05) as w:
        while w.running or await store.list_jobs(["pending", "running"], limit=1):
            await anyio.sleep(0.05)
    await store.close()


def main() -> None:
    db, spans, side = sys.argv[1:4]
    os.environ["DURON_SIDE_FILE"] = side
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(spans)))
    duron.contrib.otel.instrument(tracer_provider=provider, context_vars=[request_id])
    anyio.run(work, db)


if __name__ == "__main__":
    main()
