"""Exceptions to and from the log: record what was raised, rebuild it on delivery."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from duron._entries import ErrorInfo
from duron._errors import EffectError

if TYPE_CHECKING:
    from duron._codec import JSONValue

__all__ = ["error_info", "rebuild"]

_NATIVE = (str, int, float, bool, type(None))


def error_info(exc: BaseException) -> ErrorInfo:
    """Record an exception: qualified type, message, and its args when JSON-native."""
    cls = type(exc)
    if isinstance(exc, EffectError):
        return ErrorInfo(exc.type_name, exc.message, None)
    args: list[JSONValue] | None = (
        list(exc.args) if all(isinstance(a, _NATIVE) for a in exc.args) else None
    )
    return ErrorInfo(f"{cls.__module__}.{cls.__qualname__}", str(exc), args)


def rebuild(info: ErrorInfo, cause: BaseException | None = None) -> BaseException:
    """The recorded exception as its own type when it can be found and built.

    Only modules already imported are searched (reading a log never imports code).
    Anything else becomes :class:`~duron.EffectError` naming the original type.
    ``cause`` (the live exception, on a first run) becomes its ``__cause__``.
    """
    exc = _rebuild(info)
    if cause is not None and exc is not cause:
        exc.__cause__ = cause
    return exc


def _rebuild(info: ErrorInfo) -> BaseException:
    cls = _find_class(info.type)
    if cls is not None:
        try:
            exc = cls(*info.args) if info.args is not None else cls(info.message)
            # Built from its args, an exception whose __init__ formats them (e.g.
            # HTTPError(status) -> "server answered 404") says something else; one
            # whose args do not fit it may not even be shown.
            same = str(exc) == info.message
        except Exception:
            same = False
        if same:
            return exc
    return EffectError(info.type, info.message)


def _find_class(qualified: str) -> type[Exception] | None:
    module_name, _, _qualname = qualified.partition(".")
    # Split at the longest imported module prefix: "a.b.C.D" may be module a.b, class C.D.
    parts = qualified.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        module = sys.modules.get(module_name)
        if module is None:
            continue
        obj: Any = module
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type) and issubclass(obj, Exception):
            return obj
        return None
    return None
