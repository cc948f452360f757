"""Read a function's type hints once and bind calls to named, encoded inputs.

Inputs are recorded by parameter name and only for the arguments the caller passed
(defaults are not recorded), so ``work(name)`` and ``work(name=name)`` are the same
call, and a new parameter with a default does not break old logs.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from duron._codec import (
    UNANNOTATED,
    Codec,
    JSONValue,
    PydanticCodec,
    describe_type,
    explain,
    stored_as_is,
)
from duron._errors import PayloadEncodeError, UsageError
from duron._json import format_call as format_call

__all__ = ["Param", "Signature", "qualified_name"]

_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
)


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: Any  # an inspect.Parameter kind (POSITIONAL_ONLY, ...)
    annotation: Any
    has_default: bool
    extras: tuple[Any, ...] = ()


def qualified_name(fn: Callable[..., Any]) -> str:
    """``fn``'s qualified name, as recorded in logs and shown in errors."""
    while isinstance(fn, functools.partial):
        fn = fn.func  # every partial would otherwise be recorded as "partial"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


class Signature:
    """The parameters and return type of one function, with hints resolved lazily."""

    __slots__ = (
        "_by_name",
        "_encode_as",
        "_fn",
        "_hints",
        "_positional",
        "_required",
        "_scalars",
        "_simple",
        "name",
        "params",
        "return_annotation",
        "sig",
    )

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self.name: str = name
        try:
            self.sig: inspect.Signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"cannot read the signature of {self.name}: {exc}"
            ) from exc
        self._hints: dict[str, Any] | None = None
        self.params: tuple[Param, ...] = ()
        self.return_annotation: Any = UNANNOTATED
        self._positional: tuple[str, ...] = ()
        self._required = 0
        self._simple = False
        self._by_name: dict[str, Param] = {}
        self._encode_as: dict[str, Any] = {}
        self._scalars: tuple[tuple[str, type], ...] | None = None
        self.resolve(strict=False)

    def resolve(self, *, strict: bool = True) -> None:
        """Read the type hints; with ``strict=False`` an unresolved name is retried later."""
        if self._hints is not None:
            return
        annotated = _annotated(self._fn)
        try:
            hints = typing.get_type_hints(annotated, include_extras=True)
        except NameError as exc:
            if strict:
                raise UsageError(
                    f"cannot resolve the type hints of {self.name}: {exc}"
                ) from exc
            return
        except Exception:
            hints = dict(getattr(annotated, "__annotations__", {}) or {})
        self._hints = hints
        params = []
        for p in self.sig.parameters.values():
            ann = hints.get(p.name, UNANNOTATED)
            extras = _metadata(ann)
            params.append(
                Param(
                    p.name,
                    p.kind,
                    ann,
                    p.default is not inspect.Parameter.empty,
                    extras,
                )
            )
        self.params = tuple(params)
        self.return_annotation = hints.get("return", UNANNOTATED)
        self._positional = tuple(p.name for p in params if p.kind in _POSITIONAL)
        self._simple = all(p.kind in _POSITIONAL for p in params)
        # In a signature of positional parameters only, those without a default
        # come first: a call passing at least this many positionally binds them all.
        self._required = sum(1 for p in params if not p.has_default)
        self._by_name = {p.name: p for p in params}
        self._encode_as = {p.name: _encode_annotation(p) for p in params}
        if self._simple and all(p.annotation in _SCALAR_TYPES for p in params):
            self._scalars = tuple((p.name, p.annotation) for p in params)

    @property
    def resolved(self) -> bool:
        """Whether the type hints could be read (else they are retried on use)."""
        return self._hints is not None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map a call's explicit arguments to parameter names (defaults left out)."""
        self.resolve()
        if self._simple and self._required <= len(args) <= len(self._positional):
            bound = dict(zip(self._positional, args, strict=False))
            if kwargs:
                for key in kwargs:
                    if key in bound or key not in self._positional:
                        break
                else:
                    bound.update(kwargs)
                    return bound
            else:
                return bound
        try:
            ba = self.sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"{self.name}() called with bad arguments: {exc}") from exc
        return dict(ba.arguments)

    def param(self, name: str) -> Param:
        if self._hints is None:
            self.resolve()
        return self._by_name[name]  # KeyError: recorded inputs may name old params

    def call_arguments(
        self, values: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """How to call the function with ``values`` by parameter name (as
        :meth:`bind` gives them): positionally up to a ``*args`` parameter, whose
        values are spread, then by keyword, ``**kwargs`` spread."""
        if self._hints is None:
            self.resolve()
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in self.params)
        for p in self.params:
            if p.name not in values:
                continue
            value = values[p.name]
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            elif variadic and p.kind in _POSITIONAL:
                args.append(value)  # before *args: only by position
            else:
                kwargs[p.name] = value
        return tuple(args), kwargs

    def stored_as(self, name: str) -> Any:
        """The type a parameter's input is encoded as: its annotation (``*args``
        as a tuple of it, ``**kwargs`` as a dict of it; ``Any`` unannotated)."""
        if self._hints is None:
            self.resolve()
        return self._encode_as[name]

    def encode_inputs(
        self, codec: Codec, bound: dict[str, Any]
    ) -> dict[str, JSONValue]:
        """Encode bound arguments by their parameter annotations."""
        if self._hints is None:
            self.resolve()
        encode_as = self._encode_as
        out: dict[str, JSONValue] = {}
        for key, value in bound.items():
            ann = encode_as[key]
            try:
                out[key] = codec.encode(value, ann)
            except Exception as exc:
                raise PayloadEncodeError(
                    what=f"argument {key!r} of {self.name}",
                    type_name=describe_type(ann)
                    if ann is not Any
                    else type(value).__qualname__,
                    detail=f"cannot encode {type(value).__qualname__}: {explain(exc)}",
                ) from exc
        return out

    def encode_call(
        self, codec: Codec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, JSONValue]:
        """:meth:`bind` then :meth:`encode_inputs`, fast for positional calls."""
        scalars = self._scalars
        if (
            scalars is not None
            and not kwargs
            and len(args) == len(scalars)
            and type(codec) is PydanticCodec
        ):
            # Every parameter a str, int, float or bool, all given positionally:
            # values of exactly those types are their own encoding.
            out: dict[str, JSONValue] = {}
            for (name, ann), value in zip(scalars, args, strict=True):
                if not stored_as_is(value, ann):
                    break  # the general path encodes it, or says what is wrong
                out[name] = value
            else:
                return out
        if self._hints is None:
            self.resolve()
        if (
            kwargs
            or not self._simple
            or not self._required <= len(args) <= len(self._positional)
        ):
            return self.encode_inputs(codec, self.bind(args, kwargs))
        return self.encode_inputs(
            codec, dict(zip(self._positional, args, strict=False))
        )

    def same_call(
        self,
        codec: Codec,
        recorded: dict[str, JSONValue] | None,
        requested: dict[str, JSONValue] | None,
    ) -> bool:
        """Whether recorded inputs mean the requested call under today's types.

        Inputs are compared as encoded; when they differ, the recorded ones are
        read through the current annotations and encoded again: a model that
        gained a field with a default then matches a log written before the field
        existed. Anything that no longer validates, or encodes to something else,
        is another call. (Effect inputs on replay, a job's arguments at start.)
        """
        if recorded == requested:
            return True
        if recorded is None or requested is None:
            return False
        try:
            return self.reencode_inputs(codec, recorded) == requested
        except Exception:
            return False

    def reencode_inputs(
        self, codec: Codec, recorded: dict[str, JSONValue]
    ) -> dict[str, JSONValue]:
        """Recorded inputs read through the current annotations and encoded again.

        This is how the code of today would have recorded the same call: a model
        that gained a field with a default gets that default, a dropped field
        goes away. Replay compares this with what the code asks for when the
        recorded inputs differ from it as stored.

        Raises:
            KeyError: A recorded input names no parameter of the function.
            Exception: A recorded input no longer validates (the codec's error).
        """
        if self._hints is None:
            self.resolve()
        encode_as = self._encode_as
        values = {
            key: codec.decode(data, encode_as[key]) for key, data in recorded.items()
        }
        return self.encode_inputs(codec, values)


_SCALAR_TYPES = (str, int, float, bool)


def _annotated(fn: Callable[..., Any]) -> Any:
    """Where ``fn``'s type hints are: a callable object's are on its ``__call__``
    (its own ``__annotations__``, if any, are its class's attributes)."""
    if inspect.isroutine(fn) or isinstance(fn, (type, functools.partial)):
        return fn
    return type(fn).__call__  # callable() found it there


def _encode_annotation(p: Param) -> Any:
    """How an input is encoded: lenient ``Any`` when unannotated, *args as a tuple."""
    ann = p.annotation
    if ann is UNANNOTATED:
        return Any
    if p.kind is inspect.Parameter.VAR_POSITIONAL:
        return tuple[ann, ...]  # type: ignore[valid-type]
    if p.kind is inspect.Parameter.VAR_KEYWORD:
        return dict[str, ann]  # type: ignore[valid-type]
    return ann


def _metadata(ann: Any) -> tuple[Any, ...]:
    """The metadata of an ``Annotated[T, ...]`` annotation (``duron.Reducer``)."""
    if typing.get_origin(ann) is typing.Annotated:
        return tuple(typing.get_args(ann)[1:])
    return ()
