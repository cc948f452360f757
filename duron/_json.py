"""JSON-ready values: the shape every payload takes in the log, and how one is shown.

Kept free of imports beyond ``typing`` so that the replay core can use it without
pulling in pydantic or orjson.
"""

from __future__ import annotations

from typing import Any, Union

__all__ = ["JSONValue", "describe_operation", "format_call"]

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
