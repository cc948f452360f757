"""The OpenTelemetry observer behind :mod:`duron.contrib.otel` (see there)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import duron
from duron import _observe
from duron._errors import UsageError
from duron.contrib._otel_ids import (
    SCOPE,
    derived,
    next_span_id,
    next_trace_id,
    tracer_with_job_ids,
)
from duron.contrib._otel_metrics import Instruments

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
    )
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "duron.contrib.otel needs the OpenTelemetry API: pip install 'duron[otel]'"
    ) from exc

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from duron._json import JSONValue
    from duron._observe import RunStart

__all__ = ["instrument", "is_instrumented", "uninstrument"]


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    propagator: TextMapPropagator | None = None,
    context_vars: Iterable[contextvars.ContextVar[Any]] = (),
) -> None:
    """Report every job run in this process to OpenTelemetry, from now on.

    Call it once, after configuring the SDK; calling it again replaces the
    previous settings.

    Example:
        ```python
        import duron.contrib.otel

        duron.contrib.otel.instrument()
        ```

    Args:
        tracer_provider: Where spans go (default: the global one, looked up when
            each run begins).
        meter_provider: Where metrics go (default: the global one).
        propagator: How the trace context is stored with a job and read back
            (default: the global one, W3C trace context and baggage).
        context_vars: Context variables whose values at ``job.start()`` /
            ``store.submit()`` travel with the job and are set again around its
            effects and durable code, in whichever process runs it. Values must
            be strings, numbers or booleans.

    Raises:
        UsageError: An item of ``context_vars`` is not a ``ContextVar``, or two
            have the same name.
    """
    carried: dict[str, contextvars.ContextVar[Any]] = {}
    for var in context_vars:
        if not isinstance(var, contextvars.ContextVar):
            raise UsageError(
                f"context_vars takes contextvars.ContextVar objects, not {var!r}"
            )
        if var.name in carried:
            raise UsageError(
                f"two context variables are named {var.name!r}; the job stores them "
                "by name, so give them different names"
            )
        carried[var.name] = var
    _observe.install(_Telemetry(tracer_provider, meter_provider, propagator, carried))


def uninstrument() -> None:
    """Stop reporting job runs to OpenTelemetry (runs under way keep reporting)."""
    if isinstance(_observe.current(), _Telemetry):
        _observe.install(None)


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in force."""
    return isinstance(_observe.current(), _Telemetry)


# -- the observer -------------------------------------------------------------------


_SCALARS = (str, int, float, bool)


class _Telemetry:
    """The installed observer (see :mod:`duron._observe`)."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        propagator: TextMapPropagator | None,
        context_vars: dict[str, contextvars.ContextVar[Any]],
    ) -> None:
        self._tracer_provider = tracer_provider
        self._tracer: Tracer | None = None
        self.derived_ids = False  # Duron's tracer takes the ids Duron derives
        self._propagator = propagator
        self.context_vars = context_vars
        self.metrics = Instruments(
            meter_provider.get_meter(SCOPE, duron.__version__)
            if meter_provider is not None
            else metrics.get_meter(SCOPE, duron.__version__)
        )

    @property
    def propagator(self) -> TextMapPropagator:
        return (
            self._propagator
            if self._propagator is not None
            else propagate.get_global_textmap()
        )

    def tracer(self) -> Tracer:
        tracer = self._tracer
        if tracer is None:
            provider = self._tracer_provider or trace.get_tracer_provider()
            tracer, self.derived_ids = tracer_with_job_ids(provider)
            if self.derived_ids:  # else look again next run: the SDK may come later
                self._tracer = tracer
        return tracer

    def capture(self) -> dict[str, JSONValue] | None:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        values: dict[str, JSONValue] = {}
        for name, var in self.context_vars.items():
            value = var.get(_UNSET)
            if value is _UNSET:
                continue
            if type(value) not in _SCALARS:
                raise UsageError(
                    f"context variable {name!r} holds {type(value).__qualname__} "
                    f"{value!r}; a job carries the strings, numbers and booleans "
                    "of its context variables"
                )
            values[name] = value
        captured: dict[str, JSONValue] = {}
        if carrier:
            captured["trace"] = dict(carrier)
        if values:
            captured["vars"] = values
        return captured or None

    def run_started(self, run: RunStart) -> _Run:
        return _Run(self, run)


_UNSET: Any = object()


def _ns(t: float) -> int:
    return int(t * 1e9)


class _Run:
    """One run of a job, as spans and metrics."""

    def __init__(self, telemetry: _Telemetry, run: RunStart) -> None:
        self.t = telemetry
        self.run = run
        self.tracer = tracer = telemetry.tracer()
        self.over = False
        stored = run.context or {}
        carrier = stored.get("trace")
        base = otel_context.Context()
        if isinstance(carrier, dict):
            base = telemetry.propagator.extract(
                {k: v for k, v in carrier.items() if isinstance(v, str)}, base
            )
        vars_ = stored.get("vars")
        self.vars: list[tuple[contextvars.ContextVar[Any], Any]] = []
        if isinstance(vars_, dict):
            for name, value in vars_.items():
                var = telemetry.context_vars.get(name)
                if var is not None and type(value) in _SCALARS:
                    self.vars.append((var, value))
        # The job's own span: parent of every run, the submitter's span its parent.
        # It is made once, by the run that records the job's end; until then the
        # runs name it by its derived id.
        self.creator = trace.get_current_span(base).get_span_context()
        trace_id = (
            self.creator.trace_id
            if self.creator.is_valid
            else derived(run.seed, run.job, "trace", 16)
        )
        flags = (
            self.creator.trace_flags
            if self.creator.is_valid
            else TraceFlags(TraceFlags.SAMPLED)
        )
        self.trace_id = trace_id
        self.job_span_id = derived(run.seed, run.job, "job", 8)
        job_ctx = SpanContext(
            trace_id, self.job_span_id, is_remote=True, trace_flags=flags
        )
        self.base = base
        self.job_context = trace.set_span_in_context(NonRecordingSpan(job_ctx), base)
        self.attrs: dict[str, Any] = {
            "duron.job.id": run.job,
            "duron.function": run.function,
        }
        self.fn_attrs: dict[str, Any] = {"duron.function": run.function}
        now = time.time_ns()
        self.span: Span = tracer.start_span(
            f"duron run {run.function}",
            context=self.job_context,
            kind=SpanKind.INTERNAL,
            attributes={**self.attrs, "duron.resumed": run.resumed},
            start_time=now,
        )
        self.context = trace.set_span_in_context(self.span, self.job_context)
        # Attempts running: span, effect name, start (ns).
        self.effects: dict[int, tuple[Span, str, int]] = {}
        # Attempts ended whose outcome the log does not hold yet.
        self.ending: dict[
            int, tuple[Span, str, int, int, BaseException | None, int]
        ] = {}
        # Spans that the next write settles: (span, end, effect, error).
        self.settling: list[
            tuple[Span, int, tuple[str, str, int, bool] | None, BaseException | None]
        ] = []
        telemetry.metrics.runs.add(1, {**self.fn_attrs, "duron.resumed": run.resumed})
        telemetry.metrics.running.add(1, self.fn_attrs)
        if not run.resumed:
            telemetry.metrics.queue_wait.record(
                max(0.0, now / 1e9 - run.created), self.fn_attrs
            )

    def _start_span(
        self,
        name: str,
        span_id: int | None,
        attributes: dict[str, Any],
        start: int,
        context: Any = None,
    ) -> Span:
        token = next_span_id.set(span_id)
        try:
            return self.tracer.start_span(
                name,
                context=self.context if context is None else context,
                kind=SpanKind.INTERNAL,
                attributes={**self.attrs, **attributes},
                start_time=start,
            )
        finally:
            next_span_id.reset(token)

    def _derived_id(self, what: str) -> int:
        return derived(self.run.seed, self.run.job, what, 8)

    # -- RunObserver ----------------------------------------------------------------

    def enter_durable(self) -> None:
        for var, value in self.vars:
            var.set(value)

    def replay_done(self, replayed_effects: int) -> None:
        self.span.set_attribute("duron.effects.replayed", replayed_effects)
        if replayed_effects:
            self.t.metrics.replayed.add(replayed_effects, self.fn_attrs)

    def effect_started(self, name: str, position: int, attempt: int) -> None:
        if self.over:
            return
        start = time.time_ns()
        span = self._start_span(
            name,
            self._derived_id(f"effect {position} {attempt}"),
            {
                "duron.effect.name": name,
                "duron.position": position,
                "duron.attempt": attempt,
            },
            start,
        )
        self.effects[position] = (span, name, start)
        # Inside the effect's own context: its work is a child of its span, and
        # the job's carried context variables are set.
        otel_context.attach(trace.set_span_in_context(span, self.context))
        for var, value in self.vars:
            var.set(value)

    def effect_ended(
        self, position: int, attempt: int, error: BaseException | None
    ) -> None:
        started = self.effects.pop(position, None)
        if started is None:
            return
        # Ended once its outcome is in the log (written()): a crash before that
        # redoes the attempt, under the same span id, and only that one is sent.
        self.ending[position] = (*started, time.time_ns(), error, attempt)

    def effect_abandoned(self, position: int) -> None:
        started = self.effects.pop(position, None)
        if started is None:
            return
        span, name, start = started
        self.settling.append(
            (span, time.time_ns(), ("abandoned", name, start, False), None)
        )

    def timer_fired(self, seq: int, set_at: float, due: float) -> None:
        if self.over:
            return
        span = self._start_span(
            "durable timer",
            self._derived_id(f"timer {seq}"),
            {"duron.wait": "timer", "duron.timer.delay": max(0.0, due - set_at)},
            _ns(set_at),
        )
        self.settling.append((span, _ns(due), None, None))

    def written(self, ended: list[int]) -> None:
        for position in ended:
            ending = self.ending.pop(position, None)
            if ending is not None:
                span, name, start, end, error, attempt = ending
                outcome = "ok" if error is None else "error"
                self._finish(span, end, (outcome, name, start, attempt > 1), error)
        settling, self.settling = self.settling, []
        for span, end, effect, error in settling:
            self._finish(span, end, effect, error)

    def _finish(
        self,
        span: Span,
        end: int,
        effect: tuple[str, str, int, bool] | None,
        error: BaseException | None,
    ) -> None:
        """End ``span`` at ``end``; for an effect attempt, ``(outcome, effect name,
        start, retry)``, counted in the metrics."""
        if error is not None:
            span.record_exception(error)
            span.set_status(
                Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}")
            )
        if effect is not None:
            outcome, name, start, retry = effect
            span.set_attribute("duron.outcome", outcome)
            if outcome == "abandoned":
                span.set_status(
                    Status(
                        StatusCode.ERROR,
                        "abandoned: durable code stopped waiting for it",
                    )
                )
            attrs = {
                **self.fn_attrs,
                "duron.effect.name": name,
                "duron.outcome": outcome,
                "duron.retry": retry,
            }
            self.t.metrics.attempts.add(1, attrs)
            self.t.metrics.effect_duration.record((end - start) / 1e9, attrs)
        span.end(end_time=end)

    def future_completed(
        self, name: str, position: int, issued_at: float, error: BaseException | None
    ) -> None:
        span = self._start_span(
            f"durable future {name}",
            self._derived_id(f"future {position}"),
            {"duron.wait": "future", "duron.position": position},
            _ns(issued_at),
        )
        if error is not None:
            span.set_status(
                Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}")
            )
        span.end()

    def input_recorded(
        self,
        name: str,
        position: int,
        count: int,
        sent_at: float,
        closed: bool,
        error: BaseException | None,
    ) -> None:
        # Recorded once (never redone): the SDK's own id is as good as any.
        span = self._start_span(
            f"input {name}",
            None,
            {
                "duron.input": name,
                "duron.position": position,
                "duron.input.recorded": count,
                "duron.input.closed": closed,
            },
            _ns(sent_at),
        )
        if error is not None:
            span.set_status(
                Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}")
            )
        span.end()

    def run_ended(self, status: str, error: BaseException | None) -> None:
        if self.over:
            return
        self.over = True
        t = self.t
        end = time.time_ns()
        job_ended = status in ("completed", "failed", "cancelled", "continued")
        if job_ended:  # the end entry is written: what it cancelled never runs again
            for span, name, start in self.effects.values():
                self._finish(span, end, ("stopped", name, start, False), None)
        # Else the run stopped: what it did not record is redone when the job
        # resumes, under the same span ids; these spans are never ended, so never
        # sent.
        self.effects.clear()
        self.ending.clear()
        self.settling.clear()
        t.metrics.running.add(-1, self.fn_attrs)
        if status == "replayed":
            return  # the log held the job's end: this run did nothing live
        self.span.set_attribute("duron.run.status", status)
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(
                Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}")
            )
        self.span.end(end_time=end)
        if not job_ended:
            return
        attrs = {**self.fn_attrs, "duron.job.status": status}
        t.metrics.ended.add(1, attrs)
        t.metrics.job_duration.record(max(0.0, end / 1e9 - self.run.created), attrs)
        if not t.derived_ids:
            return  # the job's span could not take the id its runs name
        token = next_trace_id.set(self.trace_id)
        try:
            job = self._start_span(
                f"duron job {self.run.function}",
                self.job_span_id,
                {"duron.job.status": status},
                _ns(self.run.created),
                context=self.base,
            )
        finally:
            next_trace_id.reset(token)
        if status != "completed":
            job.set_status(Status(StatusCode.ERROR, status))
        job.end(end_time=end)
