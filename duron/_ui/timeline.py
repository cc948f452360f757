"""A job's operations laid out on a time axis, for its page.

The axis runs from the job's start to its end (or, for a job that has not ended,
to its last entry). Every operation is one row: a bar from when it started to when
it finished (to the axis's end while it runs), its failed attempts as segments of
the bar, and marks for what is a moment rather than a span: input arriving, a
patch taken, an operation whose start was never written (only its end is known).
Job-wide marks (cancellation asked, the deadline, the end) get a row of their own.

Rows are shown a window at a time (:data:`WINDOW` rows, the page links to the
others), so a log of 100,000 entries renders as fast as one of 200. Concurrency
shows twice: overlapping bars, and a profile of how many operations were in flight
over the whole job (a 1000-way gather is one tall column, whatever the window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from duron._cli.inspect import OpView, Timeline

__all__ = ["WINDOW", "Axis", "Bar", "Layout", "Mark", "OpRow", "layout", "rel"]

WINDOW = 200
PROFILE_BINS = 120
_OPEN = ("running", "open")


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment on the axis: ``left`` in percent of it."""

    left: float
    kind: str  # "input", "patch", "end-only", "cancel", "deadline", "end", "wake"
    title: str


@dataclass(frozen=True, slots=True)
class Bar:
    """A span on the axis, in percent of it."""

    left: float
    width: float
    kind: str  # "ok", "failed", "cancelled", "running", "attempt", "backoff"
    title: str


@dataclass(slots=True)
class OpRow:
    """One operation's row."""

    op: OpView
    status: str
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Axis:
    """The axis's origin and length (seconds), and its tick labels."""

    t0: float
    span: float
    ticks: list[tuple[float, str]]


@dataclass(slots=True)
class Layout:
    """What the timeline section shows."""

    axis: Axis
    rows: list[OpRow]
    total: int  # operations in the log
    start: int  # index of the first row shown
    job_marks: list[Mark]
    profile: list[int]  # operations in flight per bin of the axis
    peak: int
    # Operations without an outcome while the job runs, with their row index.
    waiting: list[tuple[int, OpView]]


def rel(t: float | None, t0: float) -> str:
    """``+1.250s`` from the job's start (empty for no time)."""
    if t is None:
        return ""
    d = t - t0
    sign = "+" if d >= 0 else "-"
    d = abs(d)
    if d < 1:
        return f"{sign}{d * 1e3:.1f}ms"
    if d < 60:
        return f"{sign}{d:.3f}s"
    m, s = divmod(d, 60)
    if m < 60:
        return f"{sign}{int(m)}m{s:06.3f}s"
    h, m = divmod(int(m), 60)
    return f"{sign}{h}h{m:02d}m{s:02.0f}s"


def layout(
    tl: Timeline,
    *,
    start: int = 0,
    window: int = WINDOW,
    wake_at: float | None = None,
) -> Layout:
    """Lay out ``window`` rows of ``tl`` from row ``start``.

    ``wake_at``: when a suspended job's timer is due (the store knows it; the log
    does not), marked on the job's row.
    """
    job = tl.job
    t0 = job.t if job is not None else 0.0
    ended = tl.end is not None
    t_end = tl.end.t if tl.end is not None else (tl.last_t or t0)
    span = max(t_end - t0, 1e-6)
    ops = tl.sorted_ops()
    total = len(ops)
    start = max(0, min(start, max(total - 1, 0)))

    def pct(t: float) -> float:
        return round(min(max((t - t0) / span, 0.0), 1.0) * 100, 3)

    rows = [_row(op, ended, t_end, pct, t0) for op in ops[start : start + window]]
    marks: list[Mark] = []
    for t in tl.cancels:
        marks.append(Mark(pct(t), "cancel", f"cancellation asked at {rel(t, t0)}"))
    if job is not None and job.deadline is not None and job.deadline <= t_end:
        marks.append(
            Mark(pct(job.deadline), "deadline", f"deadline {rel(job.deadline, t0)}")
        )
    if wake_at is not None:
        marks.append(
            Mark(100.0, "wake", f"waits for its timer, due {rel(wake_at, t0)}")
        )
    if tl.end is not None:
        marks.append(Mark(100.0, "end", f"ended at {rel(tl.end.t, t0)}"))
    profile = _profile(ops, t0, span, t_end)
    ticks = [(i * 25.0, rel(t0 + span * i / 4, t0)) for i in range(5)]
    waiting = (
        []
        if ended
        else [(i, op) for i, op in enumerate(ops) if op.status(False) in _OPEN]
    )
    return Layout(
        Axis(t0, span, ticks),
        rows,
        total,
        start,
        marks,
        profile,
        max(profile, default=0),
        waiting,
    )


def _row(
    op: OpView, ended: bool, t_end: float, pct: Callable[[float], float], t0: float
) -> OpRow:
    status = op.status(ended)
    row = OpRow(op, status)
    if op.kind == "patch":
        t = op.finished if op.finished is not None else op.started
        if t is not None:
            row.marks.append(Mark(pct(t), "patch", f"patch taken at {rel(t, t0)}"))
        return row
    begin = op.started
    finish = op.finished if op.done else t_end
    if begin is None:
        # Finished before a start entry was written: only its end is known.
        if op.finished is not None:
            row.marks.append(
                Mark(pct(op.finished), "end-only", f"done at {rel(op.finished, t0)}")
            )
    else:
        cursor = begin
        for a in op.attempts:
            a_start = max(a.t - a.duration, cursor)
            row.bars.append(
                Bar(
                    pct(a_start),
                    max(pct(a.t) - pct(a_start), 0.0),
                    "attempt",
                    f"attempt {a.attempt} failed after {a.duration:.3f}s: "
                    f"{a.error.type.rpartition('.')[2]}: {a.error.message}",
                )
            )
            row.bars.append(
                Bar(
                    pct(a.t),
                    max(pct(a.retry_at) - pct(a.t), 0.0),
                    "backoff",
                    f"waiting to retry until {rel(a.retry_at, t0)}",
                )
            )
            cursor = max(a.retry_at, cursor)
        if finish is not None:
            last = min(cursor, finish)
            kind = {"done": "ok", "closed": "ok", "open": "running"}.get(status, status)
            row.bars.append(
                Bar(
                    pct(last),
                    max(pct(finish) - pct(last), 0.0),
                    kind,
                    f"{status}: {rel(last, t0)} to "
                    f"{rel(finish, t0) if op.done else 'now'}",
                )
            )
    for t, _value in op.emits[:50]:
        what = "input arrived" if op.kind == "input" else "emitted"
        row.marks.append(Mark(pct(t), "input", f"{what} at {rel(t, t0)}"))
    return row


def _profile(ops: list[OpView], t0: float, span: float, t_end: float) -> list[int]:
    """Operations in flight during each of :data:`PROFILE_BINS` stretches of the
    axis (a difference array: one pass over the operations)."""
    bins = PROFILE_BINS
    diff = [0] * (bins + 1)
    for op in ops:
        if op.kind == "patch" or (op.started is None and op.finished is None):
            continue
        begin = op.started if op.started is not None else op.finished
        finish = op.finished if op.done and op.finished is not None else t_end
        assert begin is not None
        b0 = min(max(int((begin - t0) / span * bins), 0), bins - 1)
        b1 = min(max(int((finish - t0) / span * bins), b0), bins - 1)
        diff[b0] += 1
        diff[b1 + 1] -= 1
    out: list[int] = []
    level = 0
    for i in range(bins):
        level += diff[i]
        out.append(level)
    return out
