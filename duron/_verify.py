"""Replay a log against today's code, running nothing, and say whether it still fits.

This is what ``duron verify`` and :mod:`duron.testing` share. The log is replayed by
the job driver itself in replay-only mode (:meth:`Driver.run` with
``replay_only=True``): no effect runs, nothing is written, the log's lease is not
taken (a running job's log can be checked while it runs), and the replay stops where
the log ends. So the verdict is exactly what a real ``resume()`` would meet, at the
speed of replay.

Verdicts:

* ``ok``: the code replays the whole log (for an unfinished job: up to its end).
* ``incompatible``: the code takes another path (the first difference: position,
  what the log recorded, what the code asks for), or a recorded payload no longer
  validates against today's annotations (pydantic's explanation).
* ``uncheckable``: the log cannot say: it is damaged, empty, unreadable, or was
  written by another durable function.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from duron._codec import explain
from duron._context import root_call
from duron._driver import Driver
from duron._errors import (
    CorruptLogError,
    DuronError,
    JobMismatchError,
    JobNotFoundError,
    NonDeterminismError,
    PayloadDecodeError,
    PayloadError,
    StorageError,
)
from duron._job import decode_job_args, read_job_entry
from duron._job_end import JobOutcome, code_ending, code_failure
from duron.contrib._file import FileLogStorage

if TYPE_CHECKING:
    from duron._durable import DurableFn
    from duron._json import JSONValue
    from duron._storage import LogStorage

__all__ = ["Status", "VerifyReport", "verify_log"]

Status = Literal["ok", "incompatible", "uncheckable"]

REASONS: Mapping[str, str] = {
    "diverged": "the code asks for something other than what the log recorded",
    "payload": "a recorded payload no longer validates against today's types",
    "arguments": "the job's recorded arguments no longer fit the function",
    "code-error": "the code failed with a Duron error while replaying",
    "damaged": "the log is damaged or in an unknown format",
    "empty": "the log holds no job",
    "other-function": "the log was written by another durable function",
    "unreadable": "the log could not be read",
}
"""Why a log is not ``ok``: the ``reason`` of a :class:`VerifyReport`."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The verdict on one log.

    Attributes:
        log: The log's label (its path, or its job id in a store).
        function: The durable function checked against (its recorded name; the
            names, comma-separated, when several were offered and the log named
            none of them).
        status: ``"ok"``, ``"incompatible"`` or ``"uncheckable"``.
        reason: Why it is not ok (``None`` when ok): ``"diverged"``, ``"payload"``,
            ``"arguments"``, ``"code-error"`` (incompatible); ``"damaged"``,
            ``"empty"``, ``"other-function"``, ``"unreadable"`` (uncheckable).
        detail: What differs, in one or two lines (empty when ok), e.g.
            ``"position 3: log recorded charge_card(order_id=42)\\ncode now calls
            send_receipt(order_id=42)"``.
        position: The position of the operation that differs, when there is one.
        recorded: What the log recorded there (for a divergence).
        requested: What the code asks for there (for a divergence).
        offset: Where in the log the difference or the damage is (a byte offset
            in a file, an entry number in a store), when known.
        finished: Whether the log records the job's end (an unfinished job is
            checked up to where its log ends).
        entries: How many entries were read (past a difference, the driver may
            have read ahead to explain it).
        operations: How many operations the code issued while replaying (for an
            unfinished log, those it issued before stopping at the log's end).
    """

    log: str
    function: str
    status: Status
    reason: str | None = None
    detail: str = ""
    position: int | None = None
    recorded: str | None = None
    requested: str | None = None
    offset: int | None = None
    finished: bool = False
    entries: int = 0
    operations: int = 0

    @property
    def ok(self) -> bool:
        """Whether the code replays this log."""
        return self.status == "ok"

    @property
    def verdict(self) -> str:
        """``ok``, ``INCOMPATIBLE`` or ``NOT CHECKABLE``, as the CLI prints it."""
        if self.status == "ok":
            return "ok" if self.finished else "ok (unfinished)"
        return "INCOMPATIBLE" if self.status == "incompatible" else "NOT CHECKABLE"

    def to_json(self) -> dict[str, JSONValue]:
        """The report as a JSON-ready dict (what ``duron verify --json`` prints)."""
        return {
            "log": self.log,
            "function": self.function,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "position": self.position,
            "recorded": self.recorded,
            "requested": self.requested,
            "offset": self.offset,
            "finished": self.finished,
            "entries": self.entries,
            "operations": self.operations,
        }

    def __str__(self) -> str:
        head = f"{self.log}  {self.verdict}"
        if not self.detail:
            return head
        pad = " " * (len(head) + 2)
        first, *rest = self.detail.split("\n")
        return "\n".join([f"{head}  {first}", *(pad + line for line in rest)])


async def verify_log(
    functions: DurableFn[..., Any] | Mapping[str, DurableFn[..., Any]],
    storage: LogStorage,
    *,
    on_entry: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Replay ``storage``'s log against ``functions`` without running any effect.

    Args:
        functions: The durable function the log should belong to, or several by
            recorded name (the log's job entry picks one).
        storage: The log. Only :meth:`~duron.LogStorage.read` is used.
        on_entry: Called with each entry's position (byte offset, row) as it is
            read: progress reporting.

    Returns:
        The verdict; errors about the log are in it, never raised.
    """
    fns = _by_name(functions)
    label = storage.label
    default_name = next(iter(fns)) if len(fns) == 1 else ", ".join(sorted(fns))
    base = _Base(label, default_name)
    if isinstance(storage, FileLogStorage) and not storage.path.exists():
        return base.uncheckable("unreadable", f"cannot read it: no such file {label}")
    try:
        records = storage.read().__aiter__()
    except (StorageError, OSError) as err:
        return base.uncheckable("unreadable", _io_detail(err))
    if on_entry is not None:
        records = _watch(records, on_entry)
    try:
        return await _verify(fns, storage, records, base)
    finally:
        aclose = getattr(records, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True)
class _Base:
    log: str
    function: str
    entries: int = 0

    def report(
        self, status: Status, reason: str | None, detail: str, **kw: Any
    ) -> VerifyReport:
        return VerifyReport(
            self.log, self.function, status, reason, detail, entries=self.entries, **kw
        )

    def uncheckable(self, reason: str, detail: str, **kw: Any) -> VerifyReport:
        return self.report("uncheckable", reason, detail, **kw)


async def _verify(
    fns: Mapping[str, DurableFn[..., Any]],
    storage: LogStorage,
    records: AsyncIterator[tuple[int, bytes]],
    base: _Base,
) -> VerifyReport:
    label = storage.label
    try:
        first = await read_job_entry(records, label)
    except CorruptLogError as err:
        return base.uncheckable("damaged", _damage(err), offset=err.offset)
    except NonDeterminismError as err:
        return base.uncheckable(
            "damaged",
            f"damaged at offset {err.offset}: the log begins with "
            f"{err.recorded}, not with its job entry",
            offset=err.offset,
        )
    except (StorageError, JobNotFoundError, OSError) as err:
        return base.uncheckable("unreadable", _io_detail(err))
    if first is None:
        return base.uncheckable("empty", "empty log: it holds no job entry")
    base.entries = 1
    dfn = fns.get(first.fn)
    if dfn is None:
        wanted = " or ".join(sorted(fns))
        return base.uncheckable(
            "other-function", f"a log of durable function {first.fn}, not {wanted}"
        )
    base.function = dfn.name
    try:
        args = decode_job_args(dfn, first.args, label)
    except PayloadError as err:
        return base.report("incompatible", "payload", _payload(err))
    except JobMismatchError as err:
        return base.report(
            "incompatible",
            "arguments",
            f"the log started {err.recorded}\ncode now has {err.requested}",
            recorded=err.recorded,
            requested=err.requested,
        )
    driver = Driver(dfn, storage, seed=first.seed, started=first.t, replaying=True)
    main = root_call(dfn, driver, args)

    def counts() -> dict[str, Any]:
        base.entries = 1 + driver.entries_read
        return {"operations": driver.position}

    try:
        outcome = await _replay_only(driver, main, records)
    except NonDeterminismError as err:
        failed = code_failure(driver.root)
        if failed is not None and err.kind == "not-reached":
            return base.report(
                "incompatible", "code-error", f"the code failed: {failed}", **counts()
            )
        return base.report(
            "incompatible",
            "diverged",
            _divergence(err, driver),
            position=err.position,
            recorded=err.recorded,
            requested=err.requested,
            offset=err.offset,
            **counts(),
        )
    except PayloadError as err:
        return base.report(
            "incompatible",
            "payload",
            _payload(err),
            position=err.position,
            **counts(),
        )
    except CorruptLogError as err:
        return base.uncheckable("damaged", _damage(err), offset=err.offset, **counts())
    except (StorageError, OSError) as err:
        return base.uncheckable("unreadable", _io_detail(err), **counts())
    except DuronError as err:
        return base.report(
            "incompatible", "code-error", f"the code failed: {err}", **counts()
        )
    finally:
        driver.shutdown()
    if not outcome.finished:
        failed = code_failure(driver.root)
        if failed is not None:
            return base.report(
                "incompatible", "code-error", f"the code failed: {failed}", **counts()
            )
    return base.report("ok", None, "", finished=outcome.finished, **counts())


async def _replay_only(
    driver: Driver,
    main: Callable[[], Any],
    records: AsyncIterator[tuple[int, bytes]],
) -> JobOutcome:
    # Nothing is started in the task group (no effect runs); it is there because
    # the driver takes one. Errors are carried out of it unwrapped.
    failure: Exception | None = None
    outcome = JobOutcome(finished=False)
    async with anyio.create_task_group() as tg:
        try:
            outcome = await driver.run(tg, main, records, replay_only=True)
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure
    return outcome


def _by_name(
    functions: DurableFn[..., Any] | Mapping[str, DurableFn[..., Any]],
) -> Mapping[str, DurableFn[..., Any]]:
    if isinstance(functions, Mapping):
        if not functions:
            raise ValueError("verify needs at least one durable function")
        return functions
    return {functions.name: functions}


async def _watch(
    records: AsyncIterator[tuple[int, bytes]], on_entry: Callable[[int], None]
) -> AsyncIterator[tuple[int, bytes]]:
    async for offset, raw in records:
        on_entry(offset)
        yield offset, raw


def _divergence(err: NonDeterminismError, driver: Driver) -> str:
    """Two lines: what the log recorded at the position, what the code does now."""
    recorded = err.recorded if err.recorded is not None else "nothing"
    first = f"position {err.position}: log recorded {recorded}"
    match err.kind:
        case "not-reached" | "position-finished":
            ending = code_ending(driver.root)
            if ending is not None:
                now = f"code now {ending} before reaching it"
            else:
                now = "code now asks for nothing there"
        case "early-end":
            calls = err.requested_calls
            if calls:
                now = f"code now calls {err.requested}"
            else:
                now = "code now waits for more (a timer, a future or host input)"
        case "other-end":
            now = "code now ends with " + (err.requested or "").removeprefix(
                "an end with "
            )
        case _:
            calls = err.requested_calls
            verb = "calls" if not calls or calls[0].kind == "effect" else "asks for"
            now = f"code now {verb} {err.requested}"
    return f"{first}\n{now}"


def _payload(err: PayloadError) -> str:
    where = f"position {err.position}: " if err.position is not None else ""
    cause = err.__cause__
    if isinstance(err, PayloadDecodeError):
        why = explain(cause) if cause is not None else err.detail
        return f"{where}{err.what} no longer validates as {err.type_name}: {why}"
    return f"{where}{err.what} ({err.type_name}): {err.detail}"


def _damage(err: CorruptLogError) -> str:
    state = "damaged" if err.advice is None else "unreadable"
    return f"{state} at offset {err.offset}: {err.reason}"


def _io_detail(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        name = f" {os.fspath(err.filename)!r}" if err.filename else ""
        return f"cannot read it: {err.strerror}{name}"
    return f"cannot read it: {err}"
