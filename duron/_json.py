"""JSON-ready values: the shape every payload takes in the log, and how one is shown.

Kept free of imports beyond ``typing`` so that the replay core can use it without
pulling in pydantic or orjson.
"""

from __future__ import annotations

from typing import Any, Union

__all__ = [
    "JSONValue",
    "describe_operation",
    "format_call",
    "show_difference",
    "show_pair",
]

JSONValue = Union[  # noqa: UP007 - a recursive alias needs Union
    None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]
]


def format_call(name: str, inputs: dict[str, Any] | None) -> str:
    """``name(a=1, b='x')``: how an operation is shown in errors and by inspect."""
    if not inputs:
        return f"{name}()"
    parts = []
    for key, value in inputs.items():
        text = repr(value)
        if len(text) > 60:
            text = text[:57] + "..."
        parts.append(f"{key}={text}")
    return f"{name}({', '.join(parts)})"


def describe_operation(kind: str, name: str, inputs: dict[str, Any] | None) -> str:
    """An operation as errors show it: ``work(n=1)`` for an effect, ``future reply``,
    ``patch send-receipt``, ``input inbox`` for the rest."""
    if kind == "effect":
        return format_call(name, inputs)
    if inputs is None:
        return f"{kind} {name}"
    return f"{kind} {format_call(name, inputs)}"


def _show(d: dict[str, Any]) -> str:
    if "type" in d:
        return f"error {d['type']}({d['message']!r})"
    if "continue as new" in d:
        following = d["continue as new"]
        return f"a continue as new with {format_call(following['function'], following['args'])}"
    text = repr(d["result"])
    return f"result {text if len(text) <= 80 else text[:77] + '...'}"


def show_pair(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str]:
    """Two differing job ends (a result or an error, as entries hold them) for one
    message: long results are cut at the same place,
    just before their first difference, so that the difference shows."""
    if "result" not in a or "result" not in b:
        return _show(a), _show(b)
    ta, tb = show_difference(repr(a["result"]), repr(b["result"]))
    return f"result {ta}", f"result {tb}"


def show_difference(ta: str, tb: str, width: int = 80) -> tuple[str, str]:
    """Two differing texts for one message: each whole if both fit in ``width``,
    else both cut at the same place, just before their first difference, so
    that the difference shows (two long values that differ only near their end
    would otherwise print alike)."""
    if len(ta) <= width and len(tb) <= width:
        return ta, tb
    same = next(
        (i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y),
        min(len(ta), len(tb)),
    )
    start = max(0, same - 30)
    return _window(ta, start, width - 6), _window(tb, start, width - 6)


def _window(text: str, start: int, width: int = 74) -> str:
    end = start + width
    return (
        ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
    )
