"""A ``submit()`` under a job id the store already holds: the same call, or not.

A job id names one call. Submitting it again with the same call is a no-op (a
request handler may retry freely); with another call it is a
:class:`~duron.DuplicateJobError`. "The same call" is decided the way the durable
function reads its arguments: each is decoded into its annotated type and the
values compared, so ``Decimal("12.50")`` and ``Decimal("12.5")`` are one call,
and an argument left out equals its parameter's default. A conflict names the
first argument that differs, with both values shown so that the difference shows.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from duron._errors import DuplicateJobError
from duron._jobstore import parse_job_entry
from duron._json import JSONValue, format_call, show_difference

if TYPE_CHECKING:
    from duron._durable import DurableFn
    from duron._log import JobStarted

__all__ = ["check_resubmit", "first_difference"]

_ABSENT: Any = object()


def check_resubmit(
    fn: DurableFn[..., Any], job_id: str, wanted: JobStarted, first: bytes | str | None
) -> None:
    """Refuse a ``submit()`` of ``fn`` whose call differs from the job stored under
    its id, whose log starts with ``first`` (``None``: the log is empty).

    Raises:
        DuplicateJobError: Another function, other arguments, or a log that holds
            no job entry.
    """
    recorded = parse_job_entry(first, job_id) if first is not None else None
    if recorded is None:
        raise DuplicateJobError(
            job=job_id,
            recorded="a log opened with store.log() that holds no job yet",
            requested=f"{wanted.fn}(...)",
        )
    if recorded.fn != wanted.fn:
        raise DuplicateJobError(
            job=job_id,
            recorded=format_call(recorded.fn, recorded.args),
            requested=format_call(wanted.fn, wanted.args),
        )
    difference = first_difference(fn, recorded.args or {}, wanted.args or {})
    if difference is None:
        return
    name, was, now = difference
    raise DuplicateJobError(
        job=job_id,
        recorded=format_call(recorded.fn, recorded.args),
        requested=format_call(wanted.fn, wanted.args),
        argument=name,
        recorded_value=was,
        requested_value=now,
    )


def first_difference(
    fn: DurableFn[..., Any],
    recorded: dict[str, JSONValue],
    requested: dict[str, JSONValue],
) -> tuple[str, str, str] | None:
    """The first argument whose decoded values differ, as ``(name, recorded,
    requested)`` shown for a message; ``None`` when the calls are the same.

    Arguments are visited in the function's parameter order, then any recorded
    one that names no parameter any more. An argument that no longer decodes is
    compared as stored.
    """
    sig = fn.sig
    sig.resolve(strict=False)
    order = [p.name for p in sig.params]
    order += [name for name in (*recorded, *requested) if name not in order]
    for name in dict.fromkeys(order):
        was = recorded.get(name, _ABSENT)
        now = requested.get(name, _ABSENT)
        if was is _ABSENT and now is _ABSENT:
            continue
        if was is not _ABSENT and now is not _ABSENT and was == now:
            continue
        if _same_value(fn, name, was, now):
            continue
        shown_was, shown_now = show_difference(
            _show(fn, name, was), _show(fn, name, now), width=60
        )
        return name, shown_was, shown_now
    return None


def _same_value(fn: DurableFn[..., Any], name: str, was: Any, now: Any) -> bool:
    """Whether two stored values of one argument (either may be absent: the
    parameter's default) decode to equal values."""
    parameter = fn.sig.sig.parameters.get(name)
    default = inspect.Parameter.empty if parameter is None else parameter.default
    try:
        annotation = fn.sig.stored_as(name)
    except KeyError:  # a recorded argument that names no parameter now
        return False
    values = []
    for data in (was, now):
        if data is not _ABSENT:
            try:
                values.append(fn.codec.decode(data, annotation))
            except Exception:
                return False
        elif default is not inspect.Parameter.empty:
            values.append(default)
        else:
            return False
    try:
        return bool(values[0] == values[1])
    except Exception:  # a type whose == refuses the comparison
        return False


def _show(fn: DurableFn[..., Any], name: str, data: Any) -> str:
    if data is not _ABSENT:
        return repr(data)
    parameter = fn.sig.sig.parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return "(not given)"
    return f"(not given: default {parameter.default!r})"
