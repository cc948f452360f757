"""Log entries as bytes: orjson encoding and decoding, and the format version check.

The records themselves live in :mod:`duron._entries` (re-exported here); a damaged
entry is reported as :class:`~duron.CorruptLogError` naming its offset.
"""

from __future__ import annotations

from typing import Any

import orjson

from duron._entries import (
    FORMAT_VERSION,
    Entry,
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpCompleted,
    OpEmitted,
    OpStarted,
)
from duron._errors import CorruptLogError

__all__ = [
    "FORMAT_VERSION",
    "Entry",
    "ErrorInfo",
    "JobCancelled",
    "JobFinished",
    "JobStarted",
    "OpCompleted",
    "OpEmitted",
    "OpStarted",
    "decode_entry",
    "encode_entry",
]


def encode_entry(entry: Entry) -> bytes:
    """One entry as compact JSON bytes (no trailing newline)."""
    return orjson.dumps(entry.to_json())


def decode_entry(data: bytes | str, *, job: str, offset: int) -> Entry:
    """Parse one stored entry; damage raises :class:`CorruptLogError` naming ``offset``."""
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptLogError(
            job=job, offset=offset, reason=f"not JSON ({exc})"
        ) from exc
    try:
        return _from_json(d)
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
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"not a Duron log entry ({type(exc).__name__}: {exc})"
        raise CorruptLogError(job=job, offset=offset, reason=reason) from exc


class _NewerFormat(Exception):
    def __init__(self, version: int) -> None:
        self.version = version


def _from_json(d: Any) -> Entry:
    if d["type"] == "done":  # most entries: checked first, without the match
        i, t = d["id"], d["t"]
        if type(i) is int and type(t) is float:
            err = d.get("error")
            return OpCompleted(
                i,
                t,
                d.get("result"),
                None if err is None else ErrorInfo.from_json(err),
                d.get("kind"),
                d.get("name"),
                d.get("inputs"),
            )
    match d["type"]:
        case "done":
            err = d.get("error")
            return OpCompleted(
                _int(d["id"]),
                float(d["t"]),
                d.get("result"),
                ErrorInfo.from_json(err) if err is not None else None,
                d.get("kind"),
                d.get("name"),
                d.get("inputs"),
            )
        case "start":
            return OpStarted(
                _int(d["id"]),
                float(d["t"]),
                str(d["kind"]),
                str(d["name"]),
                d.get("inputs"),
            )
        case "emit":
            return OpEmitted(_int(d["id"]), float(d["t"]), d.get("value"))
        case "job":
            version = _int(d["version"])
            if version > FORMAT_VERSION:
                raise _NewerFormat(version)
            args = d["args"]
            if not isinstance(args, dict):
                raise TypeError("job arguments must be an object")
            return JobStarted(
                str(d["fn"]),
                args,
                str(d["seed"]),
                float(d["t"]),
                str(d.get("module", "")),
                version,
            )
        case "end":
            err = d.get("error")
            return JobFinished(
                float(d["t"]),
                d.get("result"),
                ErrorInfo.from_json(err) if err is not None else None,
            )
        case "cancel":
            return JobCancelled(float(d["t"]))
        case other:
            raise ValueError(f"unknown entry type {other!r}")


def _int(v: Any) -> int:
    if type(v) is not int:
        raise TypeError(f"expected an integer id, got {v!r}")
    return v
