"""duron.contrib.otel: spans and metrics for live work only, context that follows a job.

Spans are read back with the SDK's in-memory exporter, metrics with its in-memory
reader. The crash test runs real worker processes (tests/otel_jobs.py) and
SIGKILLs one while an effect runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import duron
import duron.contrib.otel
from duron.contrib.storage import MemoryLogStorage, SQLiteStore

pytestmark = pytest.mark.anyio

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.app = self.tracer_provider.get_tracer("app")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, value or histogram count)]."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[union-attr]
                        out.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), value)
                        )
        return out


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    duron.contrib.otel.instrument(
        tracer_provider=t.tracer_provider,
        meter_provider=t.meter_provider,
        context_vars=[request_id],
    )
    try:
        yield t
    finally:
        duron.contrib.otel.uninstrument()


def derived(seed: str, job: str, what: str, size: int = 8) -> int:
    """The id the documentation says Duron derives (blake2b of seed, job, what)."""
    digest = hashlib.blake2b(
        f"{seed}\x00{job}\x00{what}".encode(), digest_size=size
    ).digest()
    return int.from_bytes(digest, "big")


def job_entry(storage: MemoryLogStorage) -> dict[str, Any]:
    first: dict[str, Any] = orjson.loads(storage.raw[0])
    return first


seen: list[tuple[str, int, str]] = []  # (effect, span id current inside, request id)


@duron.effect
async def charge(order: int) -> str:
    span = trace.get_current_span().get_span_context()
    seen.append(("charge", span.span_id, request_id.get("-")))
    await anyio.sleep(0.001)
    return f"charged {order}"


@duron.effect
def receipt(order: int) -> str:  # a plain def: runs in a worker thread
    span = trace.get_current_span().get_span_context()
    seen.append(("receipt", span.span_id, request_id.get("-")))
    return f"receipt {order}"


@duron.effect
async def flaky(order: int) -> str:
    raise ValueError(f"card declined for order {order}")


@duron.durable
async def checkout(ctx: duron.Context, order: int) -> str:
    charged = await ctx.run(charge, order)
    with contextlib.suppress(ValueError):
        await ctx.run(flaky, order)
    await asyncio.sleep(0.01)  # a durable timer
    return f"{charged}, {await ctx.run(receipt, order)}"


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    seen.clear()


@pytest.mark.both_hosts
async def test_a_live_run_makes_a_span_tree_under_the_creating_span(
    telemetry: Telemetry,
) -> None:
    token = request_id.set("req-7")
    try:
        with telemetry.app.start_as_current_span("POST /checkout") as request:
            # What store.submit() and job.start() build: the job entry.
            first = checkout.job_entry((42,), {}, via="submit()")
    finally:
        request_id.reset(token)
    storage = MemoryLogStorage([orjson.dumps(first.to_json())])
    async with checkout.invoke(storage) as job:  # run outside the request
        await job.resume()
        assert await job.wait() == "charged 42, receipt 42"

    entry = job_entry(storage)
    seed, label = entry["seed"], storage.label
    request_ctx = request.get_span_context()
    assert entry["context"] == {
        "trace": {
            "traceparent": f"00-{request_ctx.trace_id:032x}-"
            f"{request_ctx.span_id:016x}-{request_ctx.trace_flags:02x}"
        },
        "vars": {"request_id": "req-7"},
    }
    spans = {s.name: s for s in telemetry.spans()}
    assert sorted(spans) == [
        "POST /checkout",
        "charge",
        "durable timer",
        "duron job checkout",
        "duron run checkout",
        "flaky",
        "receipt",
    ]
    assert {s.context.trace_id for s in spans.values() if s.context} == {
        request_ctx.trace_id
    }

    def parent(name: str) -> int | None:
        p = spans[name].parent
        return p.span_id if p is not None else None

    def span_id(name: str) -> int:
        ctx = spans[name].context
        assert ctx is not None
        return int(ctx.span_id)

    job_id = derived(seed, label, "job")
    assert span_id("duron job checkout") == job_id
    assert parent("duron job checkout") == request_ctx.span_id
    assert parent("duron run checkout") == job_id
    run_id = span_id("duron run checkout")
    for name, position in (("charge", 0), ("flaky", 1), ("receipt", 2)):
        assert parent(name) == run_id
        assert span_id(name) == derived(seed, label, f"effect {position} 1")
        attrs = dict(spans[name].attributes or {})
        assert attrs["duron.position"] == position
        assert attrs["duron.attempt"] == 1
        assert attrs["duron.effect.name"] == name
        assert attrs["duron.job.id"] == label
    assert parent("durable timer") == run_id
    assert span_id("durable timer") == derived(seed, label, "timer 0")
    flaky_span = spans["flaky"]
    assert flaky_span.status.status_code is StatusCode.ERROR
    assert flaky_span.status.description == "ValueError: card declined for order 42"
    assert [e.name for e in flaky_span.events] == ["exception"]
    assert spans["charge"].status.status_code is StatusCode.UNSET
    assert dict(spans["duron run checkout"].attributes or {}) == {
        "duron.job.id": label,
        "duron.function": "checkout",
        "duron.resumed": False,
        "duron.effects.replayed": 0,
        "duron.run.status": "completed",
    }
    # Inside each effect its own span is current, and the carried variable is set
    # (in a worker thread too), whatever the resuming task's own context holds.
    assert seen == [
        ("charge", span_id("charge"), "req-7"),
        ("receipt", span_id("receipt"), "req-7"),
    ]


async def test_a_full_replay_makes_no_span(telemetry: Telemetry) -> None:
    storage = MemoryLogStorage()
    async with checkout.invoke(storage) as job:
        await job.start(1)
        await job.wait()
    telemetry.exporter.clear()
    seen.clear()
    async with checkout.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == "charged 1, receipt 1"
    assert seen == []
    assert telemetry.spans() == []


gate: dict[str, anyio.Event] = {}


@duron.effect
async def slow_step(key: int) -> int:
    await gate["open"].wait()
    return key


@duron.durable
async def three_steps(ctx: duron.Context) -> int:
    a = await ctx.run(charge, 1)
    b = await ctx.run(receipt, 2)
    c = await ctx.run(slow_step, 3)
    return len(a) + len(b) + c


async def test_a_resume_makes_spans_only_for_what_runs_live(
    telemetry: Telemetry,
) -> None:
    storage = MemoryLogStorage()
    gate["open"] = anyio.Event()
    async with three_steps.invoke(storage) as job:
        await job.start()
        with anyio.fail_after(5):
            while not any(b'"id":2' in line for line in storage.raw):
                await anyio.sleep(0.005)  # the slow step started (and is flushed)
    # Stopped at a safe point while slow_step ran: its attempt is redone on
    # resume, under the same span id; the stopped one is never sent.
    first = telemetry.spans()
    assert sorted(s.name for s in first) == [
        "charge",
        "duron run three_steps",
        "receipt",
    ]
    gate["open"].set()
    async with three_steps.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == 3 + len("charged 1") + len("receipt 2")
    seed, label = job_entry(storage)["seed"], storage.label
    effects = [
        s for s in telemetry.spans() if s.name in ("charge", "receipt", "slow_step")
    ]
    assert sorted((s.name, s.context.span_id) for s in effects if s.context) == sorted(
        [
            ("charge", derived(seed, label, "effect 0 1")),
            ("receipt", derived(seed, label, "effect 1 1")),
            ("slow_step", derived(seed, label, "effect 2 1")),
        ]
    )
    runs = telemetry.named("duron run three_steps")
    assert [dict(r.attributes or {})["duron.run.status"] for r in runs] == [
        "stopped",
        "completed",
    ]
    assert dict(runs[1].attributes or {})["duron.effects.replayed"] == 2
    assert runs[0].parent == runs[1].parent  # both runs hang on the job's span
    metrics = telemetry.metrics()
    fn = {"duron.function": "three_steps"}
    assert metrics["duron.effect.replayed"] == [(fn, 2)]
    assert sorted(
        (a["duron.effect.name"], a["duron.outcome"], v)
        for a, v in metrics["duron.effect.attempts"]
    ) == [("charge", "ok", 1), ("receipt", "ok", 1), ("slow_step", "ok", 1)]
    assert sorted((a["duron.resumed"], v) for a, v in metrics["duron.job.runs"]) == [
        (False, 1),
        (True, 1),
    ]
    assert metrics["duron.job.ended"] == [({**fn, "duron.job.status": "completed"}, 1)]
    assert metrics["duron.job.running"] == [(fn, 0)]
    assert [v for _, v in metrics["duron.job.duration"]] == [1]
    assert [v for _, v in metrics["duron.job.queue_wait"]] == [1]  # first run only


@duron.durable
async def waits(
    ctx: duron.Context, names: duron.Stream[str] = duron.Provided
) -> list[str]:
    future_id, approved = await ctx.create_future(bool, name="approval")
    ctx.logger.info("waiting for approval %s", future_id)
    assert await approved
    got = []
    async for name in names:
        got.append(name)
    return got


async def test_waits_and_inputs_make_spans_when_they_happen_live(
    telemetry: Telemetry,
) -> None:
    storage = MemoryLogStorage()
    async with waits.invoke(storage) as job:
        await job.start()
        with anyio.fail_after(5):
            while not job.is_future_pending("1"):  # position 0: the stream
                await anyio.sleep(0.001)
        await job.complete_future("1", result=True)
        writer = await job.open_stream("names", "w")
        await writer.send("ada")
        await writer.close()
        assert await job.wait() == ["ada"]
    spans = {s.name: s for s in telemetry.spans()}
    future = spans["durable future approval"]
    assert dict(future.attributes or {})["duron.position"] == 1
    seed, label = job_entry(storage)["seed"], storage.label
    assert future.context is not None
    assert future.context.span_id == derived(seed, label, "future 1")
    values = [s for s in telemetry.spans() if s.name == "input names"]
    assert [
        (dict(s.attributes or {})["duron.input.closed"], s.parent is not None)
        for s in values
    ] == [(False, True), (True, True)]
    telemetry.exporter.clear()
    async with waits.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == ["ada"]
    assert telemetry.spans() == []


async def test_an_effect_durable_code_stops_waiting_for_is_abandoned(
    telemetry: Telemetry,
) -> None:
    @duron.durable
    async def impatient(ctx: duron.Context) -> str:
        gate["open"] = anyio.Event()
        try:
            await asyncio.wait_for(ctx.run(slow_step, 1), timeout=0.01)
        except asyncio.TimeoutError:
            return "gave up"
        return "no"

    async with impatient.invoke(MemoryLogStorage()) as job:
        await job.start()
        assert await job.wait() == "gave up"
    slow = telemetry.named("slow_step")
    assert [
        (dict(s.attributes or {})["duron.outcome"], s.status.description) for s in slow
    ] == [("abandoned", "abandoned: durable code stopped waiting for it")]


async def test_nothing_is_reported_once_uninstrumented(telemetry: Telemetry) -> None:
    duron.contrib.otel.uninstrument()
    assert not duron.contrib.otel.is_instrumented()
    storage = MemoryLogStorage()
    async with checkout.invoke(storage) as job:
        await job.start(3)
        await job.wait()
    assert telemetry.spans() == []
    assert "context" not in job_entry(storage)


def test_instrument_refuses_what_it_cannot_carry() -> None:
    other = contextvars.ContextVar[str]("request_id")
    with pytest.raises(duron.UsageError) as err:
        duron.contrib.otel.instrument(context_vars=[request_id, other])
    assert str(err.value) == (
        "two context variables are named 'request_id'; the job stores them by "
        "name, so give them different names"
    )
    with pytest.raises(duron.UsageError) as err:
        duron.contrib.otel.instrument(context_vars=["request_id"])  # type: ignore[list-item]
    assert str(err.value) == (
        "context_vars takes contextvars.ContextVar objects, not 'request_id'"
    )
    assert not duron.contrib.otel.is_instrumented()


async def test_a_context_variable_it_cannot_store_is_an_error(
    telemetry: Telemetry,
) -> None:
    var = contextvars.ContextVar[Any]("tenant")
    duron.contrib.otel.instrument(
        tracer_provider=telemetry.tracer_provider, context_vars=[var]
    )
    var.set({"id": 1})
    storage = MemoryLogStorage()
    with pytest.raises(duron.UsageError) as err:
        async with checkout.invoke(storage) as job:
            await job.start(1)
    assert str(err.value) == (
        "context variable 'tenant' holds dict {'id': 1}; a job carries the "
        "strings, numbers and booleans of its context variables"
    )
    assert storage.raw == []


# -- across processes ---------------------------------------------------------------

WORKER = Path(__file__).with_name("otel_jobs.py")


def side_starts(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split()[1:] for line in path.read_text().splitlines()]


@pytest.mark.timeout(90)
async def test_a_sigkilled_worker_and_its_successor_send_one_span_per_effect(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    """Submitted under a request's span in this process; run by a worker process
    that is SIGKILLed while step 3 runs; finished by another worker process."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from otel_jobs import STEPS, steps
        from otel_jobs import request_id as worker_request_id
    finally:
        sys.path.pop(0)
    db, spans_file, side = (
        tmp_path / "jobs.db",
        tmp_path / "spans.jsonl",
        tmp_path / "side",
    )
    store = SQLiteStore(db)
    duron.contrib.otel.instrument(
        tracer_provider=telemetry.tracer_provider, context_vars=[worker_request_id]
    )
    token = worker_request_id.set("req-42")
    try:
        with telemetry.app.start_as_current_span("POST /orders") as request:
            job_id = await store.submit(steps.options(job_id="order-42"), STEPS)
    finally:
        worker_request_id.reset(token)
    await store.close()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(WORKER), str(db), str(spans_file), str(side)]

    first = subprocess.Popen(args, env=env)
    try:
        deadline = time.monotonic() + 30
        while not any(s[0] == "3" for s in side_starts(side)):
            assert first.poll() is None, "the first worker exited before step 3"
            assert time.monotonic() < deadline, "step 3 did not start in 30 s"
            await anyio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL
    second = await anyio.run_process(args, env=env, check=False)
    assert second.returncode == 0, second.stderr

    starts = side_starts(side)
    assert sorted(int(s[0]) for s in starts) == sorted([*range(STEPS), 3])
    # Every attempt, in either process, saw the request id and ran under the
    # request's trace, inside the span Duron derives for (position, attempt 1).
    store = SQLiteStore(db)
    try:
        async for _, raw in store.read_log(job_id):
            first_entry = orjson.loads(raw)  # the job entry
            break
    finally:
        await store.close()
    seed = first_entry["seed"]
    for key, req, trace_hex, span_hex in starts:
        assert (req, trace_hex) == ("req-42", trace_id)
        assert int(span_hex, 16) == derived(seed, job_id, f"effect {key} 1")
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    step_spans = [s for s in spans if s["name"] == "step"]
    # One span per effect, the killed attempt's included once (its redo).
    assert sorted(s["attributes"]["duron.position"] for s in step_spans) == list(
        range(STEPS)
    )
    assert {s["trace_id"] for s in spans} == {trace_id}
    (job_span,) = [s for s in spans if s["name"] == "duron job steps"]
    assert job_span["parent"] == f"{request.get_span_context().span_id:016x}"
    runs = [s for s in spans if s["name"] == "duron run steps"]
    assert [r["attributes"]["duron.effects.replayed"] for r in runs] == [3]
    # Steps 0-2 hang on the killed run's span (never sent), the others on the
    # second run's; both runs on the job's span.
    killed_run = {
        s["parent"] for s in step_spans if s["attributes"]["duron.position"] < 3
    }
    assert len(killed_run) == 1
    assert killed_run != {runs[0]["span_id"]}
    assert {
        s["parent"] for s in step_spans if s["attributes"]["duron.position"] >= 3
    } == {runs[0]["span_id"]}
    assert runs[0]["parent"] == job_span["span_id"]


def test_without_the_api_the_import_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "try:\n"
        "    import duron.contrib.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout == (
        "duron.contrib.otel needs the OpenTelemetry API: pip install 'duron[otel]'\n"
    )


def test_importing_duron_imports_no_opentelemetry() -> None:
    code = "import sys, duron\nprint(any(m.startswith('opentelemetry') for m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout == "False\n"
