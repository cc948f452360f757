"""OpenTelemetry traces and metrics for Duron jobs, emitted for live work only.

Turn it on once per process, after configuring the OpenTelemetry SDK::

    import duron.contrib.otel

    duron.contrib.otel.instrument()

Every run of a job then makes a span, with a span per live effect attempt, per
durable timer that fires live, per durable future the host completes and per
value the host sends; a replayed operation makes none. The trace context where a
job was created (``job.start()``, ``store.submit()``) travels in its job entry, so
the job's spans continue the trace of the request that created it, whichever
process runs or resumes it. See the observability guide for the span tree, the
ids and the metrics.

It needs only ``opentelemetry-api`` (``pip install 'duron[otel]'``); exporting is
the application's choice of SDK and exporter.
"""

from duron.contrib._otel import instrument, is_instrumented, uninstrument

__all__ = ["instrument", "is_instrumented", "uninstrument"]
