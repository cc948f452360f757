"""Values <-> JSON-ready data, driven by type annotations.

The default :class:`PydanticCodec` builds one pydantic ``TypeAdapter`` per annotation
and caches it. Plain JSON scalars annotated as themselves skip pydantic entirely: that
is the common case and the hot path of replay.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Protocol

import pydantic
import pydantic_core

from duron._errors import PayloadDecodeError, PayloadEncodeError
from duron._json import JSONValue

__all__ = [
    "UNANNOTATED",
    "Codec",
    "JSONValue",
    "PydanticCodec",
    "decode_recorded",
    "describe_type",
    "roundtrip",
]


class _Unannotated:
    """Marker for a parameter or return value that carries no annotation."""

    _instance: _Unannotated | None = None

    def __new__(cls) -> _Unannotated:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unannotated>"


UNANNOTATED: Any = _Unannotated()
"""The annotation Duron passes to a codec for values that have none."""


class Codec(Protocol):
    """Turns values into JSON-ready data for the log and back.

    Plug your own with ``@duron.durable(codec=...)``; it is used for the job's
    arguments and result and for every effect's inputs and result in that job.
    Raise any exception to refuse a value: Duron reports it as a
    :class:`~duron.PayloadError` naming the payload.
    """

    def encode(self, value: object, annotation: Any, /) -> JSONValue:
        """Return ``value`` as JSON-ready data (dicts, lists, str, numbers, bool, None).

        Args:
            value: The value to record.
            annotation: Its declared type; ``typing.Any`` for an unannotated
                parameter, :data:`UNANNOTATED` for an unannotated result or value.

        Returns:
            Data that orjson can serialize and :meth:`decode` can read back.
        """
        ...

    def decode(self, data: JSONValue, annotation: Any, /) -> object:
        """Rebuild a value of type ``annotation`` from data :meth:`encode` returned.

        Args:
            data: What :meth:`encode` returned, as read back from the log.
            annotation: The declared type, as given to :meth:`encode`.

        Returns:
            The rebuilt value.
        """
        ...


_SCALARS: frozenset[Any] = frozenset({str, int, float, bool, type(None)})
_JSON_NATIVE = (str, int, float, bool, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the integers a log entry can hold


class PydanticCodec:
    """The default codec: pydantic ``TypeAdapter`` per annotation, cached.

    Encoding uses ``dump_python(mode="json")``; decoding validates (lax mode) into
    the annotated type, so a ``datetime`` comes back as a ``datetime``, a model as
    the model. Unannotated values must be JSON-native.
    """

    __slots__ = ("_adapters",)

    def __init__(self) -> None:
        self._adapters: dict[Any, pydantic.TypeAdapter[Any]] = {}

    def adapter(self, annotation: Any) -> pydantic.TypeAdapter[Any]:
        """Return the cached ``TypeAdapter`` for ``annotation``, building it once."""
        key = _key(annotation)
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = pydantic.TypeAdapter(annotation)
            self._adapters[key] = adapter
        return adapter

    def encode(self, value: object, annotation: Any, /) -> JSONValue:
        if annotation is UNANNOTATED:
            return _check_json_native(value)
        # The type test first: an annotation may be unhashable (Annotated with a
        # list or dict in its metadata), and ``in`` on a frozenset hashes it.
        if type(value) is annotation and annotation in _SCALARS:
            if annotation is float or annotation is int:
                _check_number(value)  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        adapter = self.adapter(annotation)
        try:
            return adapter.dump_python(value, mode="json", warnings="error")  # type: ignore[no-any-return]
        except pydantic_core.PydanticSerializationError:
            # Mostly a value of another type than annotated: validation says what
            # is wrong with it (raising), or turns it into the annotated type.
            validated = adapter.validate_python(value)
            return adapter.dump_python(validated, mode="json", warnings="error")  # type: ignore[no-any-return]

    def decode(self, data: JSONValue, annotation: Any, /) -> object:
        if annotation is UNANNOTATED:
            return data
        if type(data) is annotation and annotation in _SCALARS:
            return data
        return self.adapter(annotation).validate_python(data)


def stored_as_is(value: object, annotation: type) -> bool:
    """Whether :class:`PydanticCodec` encodes ``value``, annotated as the scalar
    type ``annotation`` (str, int, float, bool), as the value itself."""
    if type(value) is not annotation:
        return False
    if annotation is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if annotation is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return True


def _key(annotation: Any) -> Any:
    try:
        hash(annotation)
    except TypeError:
        return ("id", id(annotation))
    return annotation


def _check_number(value: float) -> None:
    # Checked here because the log would hold them differently (nan -> null) or
    # refuse them at write time, far from the value that caused it.
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no JSON form")
    elif not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"{value} does not fit in the 64 bits a log integer has")


def _check_json_native(value: object) -> JSONValue:
    if isinstance(value, _JSON_NATIVE):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_number(value)
        return value
    if isinstance(value, list):
        for item in value:
            _check_json_native(item)
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict key {k!r} is a {type(k).__name__}, not a str")
            _check_json_native(v)
        return value
    raise TypeError(
        f"a value of type {type(value).__qualname__} is not JSON-native; annotate "
        "the type so it can be encoded"
    )


def describe_type(annotation: Any) -> str:
    """A short, readable name for an annotation, for error messages."""
    if annotation is UNANNOTATED:
        return "unannotated"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    text = repr(annotation)
    return text.replace("typing.", "")


def explain(exc: BaseException) -> str:
    """Condense a codec exception into one line (pydantic's errors, field by field)."""
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "missing" and loc:
                parts.append(f"field '{loc}' required")
            elif loc:
                parts.append(f"field '{loc}': {msg}")
            else:
                parts.append(msg)
        return "; ".join(parts)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- the two ways a payload crosses the log ------------------------------------------


def roundtrip(
    codec: Codec,
    value: object,
    annotation: Any,
    *,
    what: str,
    job: str | None = None,
    position: int | None = None,
) -> tuple[JSONValue, Any]:
    """``value`` as the log records it, and as a replay will rebuild it.

    Everything the code hands to the log goes through here: the data is what gets
    written, the rebuilt value is what durable code sees on the first run, so
    that it sees exactly what a replay will give it. A value that does not encode,
    or would not decode back, is refused before anything is written.

    Args:
        codec: The job's codec.
        value: The value to record.
        annotation: Its declared type.
        what: Which payload, for the error (``"result of effect work"``).
        job: The job's label, for the error.
        position: The operation's position, for the error.

    Raises:
        PayloadEncodeError: The value cannot be recorded as ``annotation``.
    """
    try:
        data = codec.encode(value, annotation)
    except Exception as err:
        cause: Exception = err
        detail = f"cannot encode {type(value).__qualname__}: {explain(err)}"
    else:
        try:
            return data, codec.decode(data, annotation)
        except Exception as err:
            cause = err
            detail = f"would not decode back from the log: {explain(err)}"
    raise PayloadEncodeError(
        what=what,
        type_name=_type_name(annotation, value),
        detail=detail,
        position=position,
        job=job,
    ) from cause


def decode_recorded(
    codec: Codec,
    data: JSONValue,
    annotation: Any,
    *,
    what: str,
    job: str | None = None,
    position: int | None = None,
) -> Any:
    """A payload read from the log, validated into today's ``annotation``.

    Raises:
        PayloadDecodeError: It no longer validates (the type changed since the
            log was written).
    """
    try:
        return codec.decode(data, annotation)
    except Exception as err:
        raise PayloadDecodeError(
            what=f"recorded {what}",
            type_name=describe_type(annotation),
            detail=f"no longer validates: {explain(err)}",
            position=position,
            job=job,
        ) from err


def _type_name(annotation: Any, value: object) -> str:
    if annotation is Any:
        return type(value).__qualname__
    return describe_type(annotation)
