"""Log entries as bytes: orjson encoding and decoding, and the check of every entry read.

The records themselves live in :mod:`duron._entries` (re-exported here). Every entry
read is checked against what Duron writes before it becomes a record, field by field:

* ids are integers >= 0, the format version an integer >= 1;
* ``t`` is a number a :class:`~datetime.datetime` can hold (years 1 to 9999), and
  so are an ``attempt`` entry's ``retry_at`` and a job entry's ``deadline`` (if
  present);
* an ``attempt`` entry's number is an integer >= 1, its ``duration`` a number >= 0,
  its ``error`` present;
* ``type``, ``kind``, ``name``, ``fn``, ``seed``, ``module`` are strings;
* ``inputs``, job ``args`` and job ``context`` are objects (or, for ``inputs``
  and ``context``, absent);
* an ``out`` entry names its stream (a string) and holds a ``value``, or
  ``closed: true`` and maybe an ``error``;
* a job entry's ``run`` (if present) is an integer >= 1; an end entry's ``next``
  (a job that continued as new) is a job entry, checked as one, and comes without
  ``result`` or ``error``;
* ``seq`` (an inbox item's number, on ``done``, ``emit`` and ``cancel`` entries) is
  an integer >= 1, or absent;
* an ``error`` is an object with string ``type`` and ``message`` and, if present,
  ``args`` a list of scalars; a ``done`` or ``end`` entry holds a ``result`` or an
  ``error``, never both;
* no entry is nested deeper than orjson writes (:data:`MAX_DEPTH`).

Fields Duron does not know are ignored. Anything else is
:class:`~duron.CorruptLogError` naming the entry's offset, the field and what is
wrong with it, so that nothing past this module ever meets a malformed entry.
"""

from __future__ import annotations

from typing import Any

import orjson

from duron._entries import (
    FORMAT_VERSION,
    Entry,
    ErrorInfo,
    InvalidField,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpAttempted,
    OpCompleted,
    OpEmitted,
    OpStarted,
    OutputSent,
    json_type,
)
from duron._errors import CorruptLogError

__all__ = [
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "T_MAX",
    "T_MIN",
    "Entry",
    "ErrorInfo",
    "JobCancelled",
    "JobFinished",
    "JobStarted",
    "OpAttempted",
    "OpCompleted",
    "OpEmitted",
    "OpStarted",
    "OutputSent",
    "decode_entry",
    "encode_entry",
]

MAX_DEPTH = 254
"""The deepest nesting of objects and lists in an entry Duron can write, the entry
itself counting as one: ``orjson.dumps`` refuses anything deeper (its recursion
limit), so a deeper entry was not written by Duron."""

# The shortest line nested deeper than MAX_DEPTH: 255 "[" or "{", as many closing.
_DEEP_LINE = 2 * (MAX_DEPTH + 1)

T_MIN = -62135596800.0
"""``0001-01-01T00:00:00Z``, the earliest time an entry's ``t`` may hold."""
T_MAX = 253402300799.0
"""``9999-12-31T23:59:59Z``, the latest time an entry's ``t`` may hold."""

_WHAT = {
    "done": "a done entry",
    "start": "a start entry",
    "emit": "an emit entry",
    "attempt": "an attempt entry",
    "job": "a job entry",
    "end": "an end entry",
    "cancel": "a cancel entry",
    "out": "an out entry",
}


def encode_entry(entry: Entry) -> bytes:
    """One entry as compact JSON bytes (no trailing newline)."""
    return orjson.dumps(entry.to_json())


def decode_entry(data: bytes | str, *, job: str, offset: int) -> Entry:
    """Parse and check one stored entry.

    Raises:
        CorruptLogError: The entry is not JSON, or not an entry Duron writes (the
            reason names the field and what is wrong with it), or was written in a
            newer format.
    """
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptLogError(
            job=job, offset=offset, reason=f"not JSON ({exc})"
        ) from exc
    try:
        if len(data) >= _DEEP_LINE:  # a shorter one (nearly all) cannot nest too deep
            _check_depth(d)
        return _from_json(d)
    except InvalidField as exc:
        raise CorruptLogError(job=job, offset=offset, reason=_reason(d, exc)) from None
    except _NewerFormat as exc:
        raise CorruptLogError(
            job=job,
            offset=offset,
            reason=(
                f"it was written in log format version {exc.version}, newer than "
                f"this Duron reads (up to {FORMAT_VERSION})"
            ),
            advice="Upgrade duron to read it: pip install --upgrade duron",
        ) from None


class _NewerFormat(Exception):
    def __init__(self, version: int) -> None:
        self.version = version


def _reason(d: Any, exc: InvalidField) -> str:
    if not exc.path:
        return exc.problem
    kind = d.get("type") if type(d) is dict else None
    what = _WHAT.get(kind, "an entry") if type(kind) is str else "an entry"
    return f"field {exc.path!r} of {what} {exc.problem}"


def _from_json(d: Any) -> Entry:
    # Most entries are the ``done`` entry of an effect that succeeded: accept its
    # usual shapes with as few lookups as possible (a missing key, or ``d`` not an
    # object, ends up in the full check too); anything else is checked in full.
    try:
        if d["type"] == "done" and "error" not in d:
            i = d["id"]
            t = d["t"]
            if (
                type(i) is int
                and type(t) is float
                and i >= 0
                and -62135596800.0 <= t <= 253402300799.0  # T_MIN, T_MAX
            ):
                if "name" in d:
                    name = d["name"]
                    kind = d["kind"]
                    inputs = d.get("inputs")
                    if (
                        type(name) is str
                        and type(kind) is str
                        and (
                            type(inputs) is dict
                            or (inputs is None and "inputs" not in d)
                        )
                        and "seq" not in d
                    ):
                        return OpCompleted(i, t, d["result"], None, kind, name, inputs)
                elif "kind" not in d and "inputs" not in d and "seq" not in d:
                    return OpCompleted(i, t, d["result"])
    except (KeyError, TypeError):
        pass
    return _checked(d)


def _checked(d: Any) -> Entry:
    """The entry ``d`` holds, every field checked; :class:`InvalidField` if not."""
    if type(d) is not dict:
        raise InvalidField("", f"an entry must be a JSON object, not {json_type(d)}")
    kind = _field(d, "type")
    if type(kind) is not str:
        raise InvalidField("type", f"must be a string, not {json_type(kind)}")
    match kind:
        case "done":
            op_id, t = _id(d), _time(d)
            # The operation's kind, name and inputs come together, or (when a start
            # entry named the operation) not at all.
            op_kind = _optional_str(d, "kind")
            name = _optional_str(d, "name")
            inputs = _inputs(d)
            if name is None:
                if op_kind is not None:
                    raise InvalidField("kind", "comes without field 'name'")
                if inputs is not None:
                    raise InvalidField("inputs", "comes without field 'name'")
            elif op_kind is None:
                raise InvalidField("kind", "is missing (it comes with field 'name')")
            result, error = _outcome(d, "a done entry")
            return OpCompleted(
                op_id, t, result, error, op_kind, name, inputs, seq=_seq(d)
            )
        case "start":
            return OpStarted(
                _id(d), _time(d), _str(d, "kind"), _str(d, "name"), _inputs(d)
            )
        case "emit":
            return OpEmitted(_id(d), _time(d), _field(d, "value"), seq=_seq(d))
        case "job":
            version = _field(d, "version")
            if type(version) is not int or version < 1:
                raise InvalidField(
                    "version", f"must be an integer >= 1, not {_shown(version)}"
                )
            if version > FORMAT_VERSION:
                raise _NewerFormat(version)
            args = _field(d, "args")
            if type(args) is not dict:
                raise InvalidField("args", f"must be an object, not {json_type(args)}")
            module = _optional_str(d, "module")
            context = d.get("context")
            if "context" in d and type(context) is not dict:
                raise InvalidField(
                    "context", f"must be an object, not {json_type(context)}"
                )
            return JobStarted(
                _str(d, "fn"),
                args,
                _str(d, "seed"),
                _time(d),
                "" if module is None else module,
                version,
                context,
                _time(d, "deadline") if "deadline" in d else None,
                _run(d),
            )
        case "attempt":
            attempt = _field(d, "attempt")
            if type(attempt) is not int or attempt < 1:
                raise InvalidField(
                    "attempt", f"must be an integer >= 1, not {_shown(attempt)}"
                )
            raw_error = _field(d, "error")
            try:
                error = ErrorInfo.from_json(raw_error)
            except InvalidField as exc:
                raise exc.within("error") from None
            duration = _field(d, "duration")
            if (
                type(duration) is not float and type(duration) is not int
            ) or not 0 <= duration <= T_MAX - T_MIN:
                raise InvalidField(
                    "duration",
                    "must be a number of seconds >= 0, not "
                    + (
                        repr(duration)
                        if type(duration) in (int, float)
                        else json_type(duration)
                    ),
                )
            return OpAttempted(
                _id(d), _time(d), attempt, error, float(duration), _time(d, "retry_at")
            )
        case "end":
            if "next" in d:
                return JobFinished(_time(d), next=_next_run(d))
            result, error = _outcome(d, "an end entry")
            return JobFinished(_time(d), result, error)
        case "cancel":
            return JobCancelled(_time(d), seq=_seq(d))
        case "out":
            name, t = _str(d, "name"), _time(d)
            closed = d.get("closed", False)
            if closed is not True and closed is not False:
                raise InvalidField(
                    "closed", f"must be true or false, not {json_type(closed)}"
                )
            if not closed:
                return OutputSent(name, t, _field(d, "value"))
            error = None
            if "error" in d:
                try:
                    error = ErrorInfo.from_json(d["error"])
                except InvalidField as exc:
                    raise exc.within("error") from None
            return OutputSent(name, t, None, True, error)
        case _:
            raise InvalidField("", f"unknown entry type {_quoted(kind)}")


def _field(d: dict[str, Any], name: str) -> Any:
    try:
        return d[name]
    except KeyError:
        raise InvalidField(name, "is missing") from None


def _str(d: dict[str, Any], name: str) -> str:
    value = _field(d, name)
    if type(value) is not str:
        raise InvalidField(name, f"must be a string, not {json_type(value)}")
    return value


def _optional_str(d: dict[str, Any], name: str) -> str | None:
    return _str(d, name) if name in d else None


def _id(d: dict[str, Any]) -> int:
    value = _field(d, "id")
    if type(value) is not int or value < 0:
        raise InvalidField("id", f"must be an integer >= 0, not {_shown(value)}")
    return value


def _seq(d: dict[str, Any]) -> int | None:
    if "seq" not in d:
        return None
    value = d["seq"]
    if type(value) is not int or value < 1:
        raise InvalidField("seq", f"must be an integer >= 1, not {_shown(value)}")
    return value


def _run(d: dict[str, Any]) -> int:
    if "run" not in d:
        return 0
    value = d["run"]
    if type(value) is not int or value < 1:
        raise InvalidField("run", f"must be an integer >= 1, not {_shown(value)}")
    return value


def _next_run(d: dict[str, Any]) -> JobStarted:
    """The job entry an end entry's ``next`` holds (a job that continued as new)."""
    for name in ("result", "error"):
        if name in d:
            raise InvalidField(
                name,
                "comes with field 'next' (a job that continued as new ends "
                "without a result)",
            )
    value = d["next"]
    if type(value) is not dict:
        raise InvalidField("next", f"must be a job entry, not {json_type(value)}")
    if value.get("type") != "job":
        raise InvalidField("next", "must be a job entry (its 'type' is \"job\")")
    try:
        entry = _checked(value)
    except InvalidField as exc:
        raise exc.within("next") from None
    assert isinstance(entry, JobStarted)
    return entry


def _time(d: dict[str, Any], name: str = "t") -> float:
    value = _field(d, name)
    if type(value) is not float and type(value) is not int:
        raise InvalidField(name, f"must be a number, not {json_type(value)}")
    if not T_MIN <= value <= T_MAX:
        raise InvalidField(
            name,
            "must be a time within the years 1 to 9999 (seconds since 1970), "
            f"not {value!r}",
        )
    return float(value)


def _inputs(d: dict[str, Any]) -> dict[str, Any] | None:
    if "inputs" not in d:
        return None
    value = d["inputs"]
    if type(value) is not dict:
        raise InvalidField("inputs", f"must be an object, not {json_type(value)}")
    return value


def _outcome(d: dict[str, Any], what: str) -> tuple[Any, ErrorInfo | None]:
    if "error" not in d:
        if "result" not in d:
            raise InvalidField("", f"{what} must hold a field 'result' or 'error'")
        return d["result"], None
    if "result" in d:
        raise InvalidField(
            "", f"{what} holds both fields 'result' and 'error' (Duron writes one)"
        )
    try:
        return None, ErrorInfo.from_json(d["error"])
    except InvalidField as exc:
        raise exc.within("error") from None


def _shown(value: Any) -> str:
    """A value out of range by itself (an integer), anything else by its JSON type."""
    return str(value) if type(value) is int else json_type(value)


def _quoted(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:56] + "...'"


def _check_depth(d: Any) -> None:
    try:
        orjson.dumps(d)  # the writer's own limit, checked at C speed
    except orjson.JSONEncodeError:
        pass
    else:
        return
    if type(d) is not dict:
        return  # not an entry at all, which _checked says
    # Name the field that nests too deep (the entry itself is level 1).
    for key, value in d.items():
        depth = _depth(value) + 1
        if depth > MAX_DEPTH:
            raise InvalidField(
                key,
                f"is nested {depth} levels deep; Duron writes no entry nested more "
                f"than {MAX_DEPTH} levels deep",
            )
    raise InvalidField("", f"an entry nested more than {MAX_DEPTH} levels deep")


def _depth(value: Any) -> int:
    """How many objects and lists deep ``value`` is (iteratively: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        kind = type(item)
        if kind is dict:
            children: Any = item.values()
        elif kind is list:
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
