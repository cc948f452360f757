"""A job's inbox: input sent to a job of a store by its id, from any process.

``store.open_stream(job_id, name, "w")`` and ``store.complete_future(job_id, ...)``
do not reach into a running job: they add an item to the job's inbox, a table of
the store, and return once it is stored. Items are numbered per job (``seq``: 1,
2, 3... in the order they were stored). The job's run takes them from there (see
:mod:`duron._inbox_feed`) and records each one in its log exactly once, the entry
carrying the item's ``seq``; items the log records are deleted from the inbox.

What can be checked is checked when the item is sent, so that a sender hears of
its mistake at once: the job exists and has not ended; a stream or signal
parameter of that name exists (of the right direction) and was not closed; the
value validates as the parameter's type; a future id names no operation the log
shows as something else or as completed. This module holds those checks, shared
by every store; each store runs them inside the transaction that stores the item.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from duron._codec import PydanticCodec, roundtrip
from duron._durable import DurableFn, find_durable
from duron._entries import ErrorInfo, OpCompleted, OpStarted
from duron._errors import UsageError
from duron._jobstore import TERMINAL
from duron._json import JSONValue
from duron._log import decode_entry
from duron._recorded_errors import error_info

__all__ = [
    "InboxItem",
    "ItemKind",
    "Sending",
    "entry_patterns",
    "future_sending",
    "is_pending_future",
    "item_from_row",
    "refusal",
    "resolve_durable",
    "stream_sending",
]

ItemKind = Literal["value", "close", "future", "cancel"]

_PLAIN = PydanticCodec()  # a future's result when its function is not known here


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One stored item of a job's inbox.

    Attributes:
        seq: Its number in the job's inbox (1, 2, 3...).
        kind: ``value`` (for a stream or signal), ``close`` (of a stream or signal),
            ``future`` (a future's result or error: also a child job's end),
            ``cancel`` (``store.cancel``: delivered as cancellation).
        target: The parameter's name, or the future's id.
        data: The encoded value or result.
        error: The error a stream was closed with, or a future fails with.
    """

    seq: int
    kind: ItemKind
    target: str
    data: JSONValue = None
    error: ErrorInfo | None = None


def item_from_row(row: tuple[Any, ...]) -> InboxItem:
    """An inbox row ``(seq, kind, target, data, error)`` as an :class:`InboxItem`."""
    seq, kind, target, data, error = row
    return InboxItem(
        int(seq),
        kind,
        target,
        None if data is None else orjson.loads(data),
        None if error is None else ErrorInfo.from_json(orjson.loads(error)),
    )


@dataclass(frozen=True, slots=True)
class Sending:
    """An item about to be stored, checked as far as the sender can check it.

    Attributes:
        job_id: The job.
        kind: See :class:`InboxItem`.
        target: The parameter's name, or the future's id.
        op_id: The operation the item goes to (a stream's or signal's position,
            the future's id).
        data: The encoded value or result, as JSON text (``None``: none).
        error: The error, as JSON text (``None``: none).
        what: How messages name the item (``"the value for 'approvals'"``).
    """

    job_id: str
    kind: ItemKind
    target: str
    op_id: int
    data: str | None
    error: str | None
    what: str


def resolve_durable(
    job_id: str, function: str, module: str, fn: DurableFn[..., Any] | None
) -> DurableFn[..., Any]:
    """The durable function a job runs: ``fn`` if given (it must be that one),
    else the one decorated under that name in this process, else the one its
    recorded module defines once imported.

    Raises:
        UsageError: ``fn`` is another function, or none can be found here.
    """
    if fn is not None:
        if not isinstance(fn, DurableFn):
            raise UsageError(f"fn must be a @duron.durable function, not {fn!r}")
        if fn.name != function:
            raise UsageError(
                f"job {job_id} runs durable function {function}, not {fn.name}; "
                "pass the function that runs it"
            )
        return fn
    found = find_durable(module, function)
    if found is not None:
        return found
    reason = f"module {module!r} does not define it"
    if module and module != "__main__":
        try:
            obj: Any = importlib.import_module(module)
        except Exception as exc:  # any import failure: say it, do not crash
            reason = f"importing module {module!r} failed: {type(exc).__name__}: {exc}"
            obj = None
        for part in function.split(".") if obj is not None else ():
            obj = getattr(obj, part, None)
        if isinstance(obj, DurableFn) and obj.name == function:
            return obj
        found = find_durable(module, function)  # decorated under a custom name
        if found is not None:
            return found
    elif module == "__main__":
        # A script's function: the one of that name this process imported.
        found = find_durable(None, function)
        if found is not None:
            return found
        reason = "it was defined in the __main__ module of the process that started it"
    raise UsageError(
        f"cannot check input for job {job_id}: its durable function {function} is "
        f"not known in this process ({reason}); pass the function (fn=...), or "
        "import the module that defines it first (duron jobs: --import MODULE)"
    )


def stream_sending(
    dfn: DurableFn[..., Any],
    job_id: str,
    name: str,
    *,
    value: Any = None,
    close: bool = False,
    error: BaseException | None = None,
) -> Sending:
    """The item that sends ``value`` to (or closes) a job's ``Stream``/``Signal``
    parameter ``name``.

    Raises:
        UsageError: No such parameter, or a ``StreamWriter`` (the job writes it).
        PayloadEncodeError: ``value`` does not validate as the parameter's type.
    """
    inputs = [inj for inj in dfn.injections if inj.kind != "writer"]
    inj = next((i for i in dfn.injections if i.name == name), None)
    if inj is None:
        known = ", ".join(sorted(i.name for i in dfn.injections)) or "none"
        raise UsageError(
            f"durable function {dfn.name} has no provided parameter {name!r} "
            f"(provided parameters: {known})"
        )
    if inj.kind == "writer":
        raise UsageError(
            f"{name!r} is a StreamWriter the durable code writes to; read it: "
            f"store.open_stream(job_id, {name!r}, 'r')"
        )
    # Stream and signal parameters are the job's first operations, in order.
    op_id = inputs.index(inj)
    if close:
        text = None if error is None else _error_text(error)
        return Sending(job_id, "close", name, op_id, None, text, f"closing {name!r}")
    data, _ = roundtrip(
        dfn.codec,
        value,
        inj.annotation,
        what=f"value sent to {name!r} of job {job_id}",
    )
    return Sending(
        job_id,
        "value",
        name,
        op_id,
        orjson.dumps(data).decode(),
        None,
        f"the value for {name!r}",
    )


def future_sending(
    dfn: DurableFn[..., Any] | None,
    job_id: str,
    future_id: str,
    result: Any,
    exception: BaseException | None,
) -> Sending:
    """The item that completes future ``future_id`` with ``result`` (or fails it
    with ``exception``). The future's type lives in the running code only: the
    result is encoded here, and validated when the job receives it.

    Raises:
        UsageError: ``future_id`` is not a future id.
        PayloadEncodeError: ``result`` has no JSON form.
    """
    fid = str(future_id)
    if not fid.isdigit() or not fid.isascii():
        raise UsageError(
            f"job {job_id}: {future_id!r} is not a future id (ctx.create_future "
            "returns one, such as '3')"
        )
    what = f"the result of future {fid}"
    if exception is not None:
        return Sending(
            job_id, "future", fid, int(fid), None, _error_text(exception), what
        )
    codec = dfn.codec if dfn is not None else _PLAIN
    data, _ = roundtrip(
        codec, result, Any, what=f"result for future {fid} of job {job_id}"
    )
    return Sending(
        job_id, "future", fid, int(fid), orjson.dumps(data).decode(), None, what
    )


def _error_text(error: BaseException) -> str:
    return orjson.dumps(error_info(error).to_json()).decode()


def entry_patterns(op_id: int) -> tuple[str, str]:
    """``LIKE`` patterns of the ``start`` and ``done`` entries of operation ``op_id``
    (entries are written with ``type`` and ``id`` first)."""
    return f'{{"type":"start","id":{op_id},%', f'{{"type":"done","id":{op_id},%'


def refusal(
    sending: Sending,
    *,
    status: str,
    function: str | None,
    entries: list[tuple[int, str]],
    queued: list[str],
) -> UsageError | None:
    """Why the store must refuse ``sending`` (``None``: store it).

    Args:
        sending: The item.
        status: The job's status now (read in the storing transaction).
        function: The job's function (``None``: no job entry yet).
        entries: The log's ``start``/``done`` entries of ``sending.op_id``.
        queued: The kinds of the items of the same target still in the inbox.
    """
    job = sending.job_id
    if status in TERMINAL:
        return UsageError(f"job {job} ended ({status}); it takes no more input")
    if function is None:
        return UsageError(
            f"job {job} has no job entry yet (its log was opened and not started); "
            "it takes no input before it starts"
        )
    started, done = _log_facts(entries, job)
    if sending.kind == "future":
        fid = sending.target
        named = done or started
        if named is not None and named.kind is not None and named.kind != "future":
            return UsageError(
                f"job {job}: operation #{fid} is {named.kind} {named.name!r}, not a "
                "future"
            )
        if done is not None or "future" in queued:
            return UsageError(f"job {job}: future {fid} was already completed")
        return None
    if done is not None or "close" in queued:
        return UsageError(
            f"job {job}: {sending.target!r} is closed; it takes no more values"
        )
    return None


def is_pending_future(
    status: str, entries: list[tuple[int, str]], queued: list[str], job: str
) -> bool:
    """Whether the log shows future ``op_id`` waiting and nothing completes it yet."""
    if status in TERMINAL:
        return False
    started, done = _log_facts(entries, job)
    return (
        done is None
        and started is not None
        and started.kind == "future"
        and "future" not in queued
    )


def _log_facts(
    entries: list[tuple[int, str]], job: str
) -> tuple[OpStarted | None, OpCompleted | None]:
    started: OpStarted | None = None
    done: OpCompleted | None = None
    for seq, raw in entries:
        entry = decode_entry(raw, job=job, offset=seq)
        if isinstance(entry, OpStarted):
            started = entry
        elif isinstance(entry, OpCompleted):
            done = entry
    return started, done
