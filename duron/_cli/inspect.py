"""``duron inspect LOG``: a job's log as a readable timeline, without its code.

Everything shown comes from the log itself (the job entry names the function and
its arguments; operation entries name each effect and its inputs), so no user
module is imported and a log can be read anywhere. ``--json`` prints the same
facts for tools.

Per operation: position, kind, name and inputs, status, when it started (when its
``start`` entry was written: an operation that finished before the next write has
only its ``done`` entry, so only its end is known), when it finished, how long it
took, its result, error or emitted values, and the failed attempts a retry policy
tried again (each one's error and duration, and when the next was due). Statuses:

* ``done`` / ``failed``: the operation's outcome (a result / an error) is logged;
* ``running``: no outcome yet and the job has not ended: a resumed job runs it again;
* ``cancelled``: no outcome and the job ended: the durable code stopped waiting;
* host inputs (stream and signal parameters) are ``open`` or ``closed``;
* ``ctx.patched`` markers are ``taken``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from duron._errors import CorruptLogError, DuronError, UsageError
from duron._json import JSONValue
from duron._log import (
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpAttempted,
    OpCompleted,
    OpEmitted,
    OpStarted,
    decode_entry,
)
from duron._redact import redact

if TYPE_CHECKING:
    import argparse

    from duron._cli._sources import LogRef
    from duron._storage import LogStorage

__all__ = ["OpView", "Timeline", "read_timeline", "register", "render_text", "run"]

_LIMIT = 80
_EMITS_SHOWN = 5
_CANCELLED_TYPES = (
    "asyncio.exceptions.CancelledError",
    "duron._errors.JobCancelledError",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a job's log as a timeline (no code is imported)",
        description=(
            "Show a job's log as a timeline: every operation with its position, "
            "kind, name, inputs, result or error, times and status; the job's "
            "function, arguments, start and end. No user code is imported. LOG is "
            "a file path or a job in a store: sqlite:///jobs.db#job-id."
        ),
    )
    p.add_argument("log", metavar="LOG", nargs="?", help="log file or sqlite:///DB#JOB")
    p.add_argument("--store", metavar="URL", help="a job store (with --job)")
    p.add_argument("--job", metavar="ID", help="the job's id in --store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--full", action="store_true", help="show values and emissions untruncated"
    )
    p.add_argument("--plain", action="store_true", help="plain text even on a terminal")
    p.add_argument(
        "--run",
        metavar="N",
        type=int,
        help="show run N of a job that continued as new (default: its current run)",
    )
    p.set_defaults(func=run)


# -- the model ---------------------------------------------------------------------


@dataclass(slots=True)
class OpView:
    """One operation as the log records it."""

    position: int
    kind: str | None = None
    name: str | None = None
    inputs: dict[str, JSONValue] | None = None
    started: float | None = None
    finished: float | None = None
    result: JSONValue = None
    error: ErrorInfo | None = None
    done: bool = False
    emits: list[tuple[float, JSONValue]] = field(default_factory=list)
    attempts: list[OpAttempted] = field(default_factory=list)

    def status(self, job_ended: bool) -> str:
        if self.kind == "patch":
            return "taken"
        if self.kind == "input":
            if not self.done:
                return "open"
            return "failed" if self.error is not None else "closed"
        if self.done:
            if self.error is None:
                return "done"
            return "cancelled" if self.error.type in _CANCELLED_TYPES else "failed"
        return "cancelled" if job_ended else "running"

    def describe(self, limit: int | None) -> str:
        name = self.name if self.name is not None else "?"
        if self.kind in (None, "effect"):
            return _call(name, self.inputs, limit)
        return _call(name, self.inputs, limit) if self.inputs else name

    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(self.finished - self.started, 0.0)


@dataclass(slots=True)
class Timeline:
    """A log read for display: the job, its operations by position, its end."""

    log: str
    job: JobStarted | None = None
    ops: dict[int, OpView] = field(default_factory=dict)
    cancels: list[float] = field(default_factory=list)
    end: JobFinished | None = None
    entries: int = 0
    size: int = 0  # bytes of the entries read, as stored (without line ends)
    last_t: float | None = None
    damage: CorruptLogError | None = None
    runs: int = 1  # how many runs the job's chain holds (it continued as new)

    @property
    def status(self) -> str:
        """``empty``, ``unfinished`` (no end yet), ``finished``, ``failed``, ``cancelled``."""
        if self.job is None:
            return "empty"
        end = self.end
        if end is None:
            return "unfinished"
        if end.next is not None:
            return "continued"
        if end.error is None:
            return "finished"
        return "cancelled" if end.error.type in _CANCELLED_TYPES else "failed"

    def to_json(self) -> dict[str, JSONValue]:
        job = self.job
        ended = self.end is not None
        ops: list[JSONValue] = []
        for op in self.sorted_ops():
            ops.append(
                {
                    "position": op.position,
                    "kind": op.kind,
                    "name": op.name,
                    "inputs": op.inputs,
                    "status": op.status(ended),
                    "started": op.started,
                    "finished": op.finished,
                    "duration": op.duration(),
                    "result": op.result if op.done and op.error is None else None,
                    "error": op.error.to_json() if op.error is not None else None,
                    "emits": [{"t": t, "value": v} for t, v in op.emits],
                    "attempts": [
                        {
                            "attempt": a.attempt,
                            "t": a.t,
                            "duration": a.duration,
                            "error": a.error.to_json(),
                            "retry_at": a.retry_at,
                        }
                        for a in op.attempts
                    ],
                }
            )
        end = self.end
        return {
            "log": self.log,
            "entries": self.entries,
            "bytes": self.size,
            "status": self.status,
            "runs": self.runs,
            "job": None
            if job is None
            else {
                "function": job.fn,
                "module": job.module,
                "args": job.args,
                "seed": job.seed,
                "version": job.version,
                "t": job.t,
                "started": _iso(job.t),
                "deadline": job.deadline,
                "run": job.run,
            },
            "operations": ops,
            "cancels": list(self.cancels),
            "end": None
            if end is None
            else {
                "t": end.t,
                "result": end.result if end.error is None else None,
                "error": end.error.to_json() if end.error is not None else None,
                "next": end.next.to_json() if end.next is not None else None,
            },
            "last_t": self.last_t,
            "damage": None
            if self.damage is None
            else {"offset": self.damage.offset, "reason": self.damage.reason},
        }

    def sorted_ops(self) -> list[OpView]:
        return [self.ops[k] for k in sorted(self.ops)]


async def read_timeline(
    storage: LogStorage, run: int | None = None, *, into: Timeline | None = None
) -> Timeline:
    """Read a whole log into a :class:`Timeline`; damage stops the reading and is kept.

    Args:
        storage: The log.
        run: For a job that continued as new, the run to read (default: its
            current run, the one ``storage.read()`` yields).
        into: A timeline of the same run of this log read before (undamaged):
            only the entries appended since are decoded and added to it, a log
            only grows.

    Raises:
        StorageError: The log cannot be read at all.
        UsageError: ``run`` is given for a storage that keeps no chain of runs.
    """
    run_count = getattr(storage, "run_count", None)
    runs = max(1, await run_count()) if run_count is not None else 1
    # A job that continued as new since is read again from its new run's start.
    same = into is not None and into.damage is None and into.runs == runs
    tl = into if same and into is not None else Timeline(storage.label)
    tl.runs = runs
    skip = tl.entries
    label = storage.label
    ops = tl.ops
    if run is None:
        records = storage.read()
    elif run_count is None:
        raise UsageError(f"{label} keeps no chain of runs: --run needs one")
    elif not 0 <= run < tl.runs:
        raise UsageError(
            f"{label} holds runs 0 to {tl.runs - 1}, not run {run}"
            if tl.runs > 1
            else f"{label} holds one run (0), not run {run}"
        )
    else:
        records = storage.read_run(run)  # type: ignore[attr-defined]
    try:
        async for offset, raw in records:
            if skip:
                skip -= 1
                continue
            try:
                entry = decode_entry(raw, job=label, offset=offset)
            except CorruptLogError as err:
                tl.damage = err
                break
            tl.entries += 1
            tl.size += len(raw)
            if not isinstance(entry, JobStarted):
                tl.last_t = entry.t
            match entry:
                case JobStarted():
                    if tl.job is None:
                        tl.job = entry
                case OpStarted():
                    op = ops.setdefault(entry.id, OpView(entry.id))
                    op.kind, op.name, op.inputs = entry.kind, entry.name, entry.inputs
                    op.started = entry.t
                case OpCompleted():
                    op = ops.setdefault(entry.id, OpView(entry.id))
                    if entry.name is not None:
                        op.kind, op.name, op.inputs = (
                            entry.kind,
                            entry.name,
                            entry.inputs,
                        )
                    op.finished = entry.t
                    op.result, op.error, op.done = entry.result, entry.error, True
                case OpEmitted():
                    ops.setdefault(entry.id, OpView(entry.id)).emits.append(
                        (entry.t, entry.value)
                    )
                case OpAttempted():
                    ops.setdefault(entry.id, OpView(entry.id)).attempts.append(entry)
                case JobCancelled():
                    tl.cancels.append(entry.t)
                case JobFinished():
                    tl.end = entry
    finally:
        aclose = getattr(records, "aclose", None)
        if aclose is not None:
            await aclose()
    return tl


# -- plain text --------------------------------------------------------------------


def render_text(tl: Timeline, *, full: bool = False) -> str:
    """The timeline as aligned plain text."""
    limit = None if full else _LIMIT
    lines = _header(tl, limit)
    if tl.job is None:
        return "\n".join(lines)
    t0 = tl.job.t
    ended = tl.end is not None
    rows = [["pos", "kind", "operation", "status", "started", "done", "took"]]
    details: list[list[str]] = [[]]
    for op in tl.sorted_ops():
        took = op.duration()
        rows.append(
            [
                str(op.position),
                op.kind or "?",
                op.describe(limit),
                op.status(ended),
                _rel(op.started, t0),
                _rel(op.finished, t0),
                _dur(took) if took is not None else "",
            ]
        )
        details.append(_details(op, t0, limit))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    indent = " " * (widths[0] + 2)
    lines.append("")
    for row, extra in zip(rows, details, strict=True):
        cells = [row[0].rjust(widths[0])]
        cells += [c.ljust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        lines += [indent + d for d in extra]
    return "\n".join(lines)


def _header(tl: Timeline, limit: int | None) -> list[str]:
    rows: list[tuple[str, str]] = [
        ("log", f"{tl.log} ({_plural(tl.entries, 'entry')}, {_size(tl.size)})")
    ]
    job = tl.job
    if job is None:
        rows.append(("status", "empty: the log holds no job entry"))
    else:
        rows.append(("job", _call(job.fn, job.args, limit)))
        if job.module:
            rows.append(("module", job.module))
        rows.append(("started", _iso(job.t)))
        if tl.runs > 1:
            rows.append(
                (
                    "run",
                    f"{job.run} of runs 0 to {tl.runs - 1} (the job continued as "
                    "new; --run N shows another)",
                )
            )
        if job.deadline is not None:
            rows.append(
                ("deadline", f"{_iso(job.deadline)} ({_rel(job.deadline, job.t)})")
            )
        for t in tl.cancels:
            rows.append(("cancel", f"requested by the host at {_rel(t, job.t)}"))
        rows.append(("status", _job_status(tl, limit)))
    if tl.damage is not None:
        rows.append(
            (
                "damaged",
                f"at offset {tl.damage.offset}: {tl.damage.reason}; "
                "nothing after it is shown",
            )
        )
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)}  {v}" for k, v in rows]


def _job_status(tl: Timeline, limit: int | None) -> str:
    job = tl.job
    assert job is not None
    end = tl.end
    if end is None:
        running = sum(1 for op in tl.ops.values() if op.status(False) == "running")
        where = f" at {_rel(tl.last_t, job.t)}" if tl.last_t is not None else ""
        flight = "no operation" if running == 0 else _plural(running, "operation")
        return f"unfinished: the log ends{where} with {flight} in flight"
    at = _rel(end.t, job.t)
    if end.next is not None:
        return (
            f"continued as new at {at}, as run {end.next.run}: "
            f"{_call(end.next.fn, end.next.args, limit)}"
        )
    if end.error is None:
        return f"finished at {at}, returned {_value(end.result, limit)}"
    verb = "cancelled" if tl.status == "cancelled" else "failed"
    return f"{verb} at {at}: {_error(end.error, limit)}"


def _details(op: OpView, t0: float, limit: int | None) -> list[str]:
    out: list[str] = []
    if op.kind == "patch":
        return out
    shown = op.emits if limit is None else op.emits[:_EMITS_SHOWN]
    verb = "received" if op.kind == "input" else "emitted"
    for t, value in shown:
        out.append(f"{verb} {_value(value, limit)} at {_rel(t, t0)}")
    if len(shown) < len(op.emits):
        out.append(f"... {len(op.emits) - len(shown)} more (--full shows all)")
    for a in op.attempts:
        out.append(
            f"attempt {a.attempt} failed after {_dur(a.duration)}: "
            f"{_error(a.error, limit)}; attempt {a.attempt + 1} due at "
            f"{_rel(a.retry_at, t0)}"
        )
    if op.done:
        if op.error is not None:
            out.append(f"raised {_error(op.error, limit)}")
        elif op.kind != "input":
            out.append(f"-> {_value(op.result, limit)}")
    return out


# -- rich --------------------------------------------------------------------------


def render_rich(
    tl: Timeline, out: TextIO, *, full: bool = False, width: int | None = None
) -> None:
    """The timeline as a rich table (on a terminal; ``width``: its columns)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    limit = None if full else _LIMIT
    console = Console(file=out, highlight=False, width=width)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for line in _header(tl, limit):
        key, _, value = line.partition("  ")
        head.add_row(Text(key), Text(value.strip()))
    console.print(head)
    console.print()
    if tl.job is None:
        return
    t0 = tl.job.t
    ended = tl.end is not None
    table = Table(show_edge=False, pad_edge=False, expand=False)
    for col, justify in (
        ("pos", "right"),
        ("kind", "left"),
        ("operation", "left"),
        ("status", "left"),
        ("started", "right"),
        ("done", "right"),
        ("took", "right"),
        ("outcome", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    colors = {
        "done": "green",
        "taken": "green",
        "closed": "green",
        "failed": "red",
        "cancelled": "yellow",
        "running": "cyan",
        "open": "cyan",
    }
    for op in tl.sorted_ops():
        status = op.status(ended)
        took = op.duration()
        table.add_row(
            str(op.position),
            Text(op.kind or "?"),
            Text(op.describe(limit)),
            Text(status, style=colors.get(status, "")),
            _rel(op.started, t0),
            _rel(op.finished, t0),
            _dur(took) if took is not None else "",
            Text("\n".join(_details(op, t0, limit))),
        )
    console.print(table)


# -- the command --------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if (args.log is None) == (args.store is None) or (args.store is None) != (
        args.job is None
    ):
        print("duron inspect: give one LOG, or --store URL --job ID", file=sys.stderr)
        return 2
    try:
        tl = anyio.run(_read, args)
    except (DuronError, OSError) as err:
        print(f"duron inspect: {redact(str(err))}", file=sys.stderr)
        return 2
    out = sys.stdout
    if args.json:
        out.write(json.dumps(tl.to_json(), indent=2) + "\n")
    elif not args.plain and _rich_terminal(out):
        render_rich(tl, out, full=args.full)
    else:
        out.write(render_text(tl, full=args.full) + "\n")
    if tl.damage is not None:
        print(f"duron inspect: {redact(str(tl.damage))}", file=sys.stderr)
        return 2
    return 0


async def _read(args: argparse.Namespace) -> Timeline:
    from duron._cli._sources import Stores

    stores = Stores()
    try:
        ref: LogRef
        ref = stores.job(args.store, args.job) if args.store else stores.log(args.log)
        if ref.size is None and not _is_store(ref):
            raise UsageError(f"no such log file: {ref.label}")
        tl = await read_timeline(ref.storage, args.run)
        tl.log = ref.label
        return tl
    finally:
        await stores.aclose()


def _is_store(ref: LogRef) -> bool:
    from duron._cli._sources import StoreLog

    return isinstance(ref.storage, StoreLog)


def _rich_terminal(out: TextIO) -> bool:
    try:
        if not out.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


# -- formatting --------------------------------------------------------------------


def _call(name: str, inputs: dict[str, Any] | None, limit: int | None) -> str:
    if not inputs:
        return f"{name}()"
    per = None if limit is None else max(limit // 2, 20)
    return f"{name}({', '.join(f'{k}={_value(v, per)}' for k, v in inputs.items())})"


def _value(value: Any, limit: int | None) -> str:
    text = repr(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _error(err: ErrorInfo, limit: int | None) -> str:
    text = err.type.rpartition(".")[2]
    if err.message:
        text += f": {err.message}"
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _iso(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d} UTC"


def _rel(t: float | None, t0: float) -> str:
    if t is None:
        return ""
    d = t - t0
    sign = "+" if d >= 0 else "-"
    return sign + _dur(abs(d), fine=False)


def _dur(d: float, *, fine: bool = True) -> str:
    if fine and d < 1e-3:
        return f"{d * 1e6:.0f}us"
    if fine and d < 1:
        return f"{d * 1e3:.1f}ms"
    if d < 60:
        return f"{d:.3f}s"
    m, s = divmod(d, 60)
    if m < 60:
        return f"{int(m)}m{s:06.3f}s"
    h, m = divmod(int(m), 60)
    return f"{h}h{m:02d}m{s:02.0f}s"


def _size(n: int) -> str:
    """A log's size: exact bytes, and a rounded figure past a KiB."""
    exact = "1 byte" if n == 1 else f"{n:,} bytes"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{exact}, {n / scale:.1f} {unit}"
    return exact


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"
