"""``@duron.effect``: mark a function as a side effect and read its types once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import sys
import typing
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from types import MethodType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, overload

from duron._codec import UNANNOTATED
from duron._durable import DurableFn
from duron._durable_loop import in_durable_code
from duron._errors import UsageError
from duron._options import EffectOptions
from duron._signature import Signature, qualified_name

if TYPE_CHECKING:
    from duron._retry import RetryPolicy

__all__ = ["EffectSpec", "Reducer", "effect", "effect_spec"]

_F = TypeVar("_F", bound=Callable[..., Any])

EffectKind = Literal["async", "sync", "stream", "awaitable"]


class Reducer(NamedTuple):
    """Marks the state parameter of a streaming effect and how actions fold into it.

    ``Annotated[int, duron.Reducer(lambda state, action: state + action)]`` on the
    first parameter of an async-generator effect: every value the generator yields
    is folded into the state; ``ctx.run`` returns the final state.
    """

    reducer: Callable[[Any, Any], Any]


def _replace(_old: object, new: object) -> object:
    return new


@dataclass(slots=True)
class EffectSpec:
    """What Duron knows about one effect function."""

    fn: Callable[..., Any]
    name: str
    sig: Signature
    kind: EffectKind
    reducer: Callable[[Any, Any], Any] = _replace
    action_annotation: Any = UNANNOTATED
    _result_annotation: Any = None  # set to _UNSET in __post_init__; cached once read
    task_name: str = ""  # the name of the task a live run of it gets
    result_what: str = ""  # how errors name its result
    # Retry policy and timeouts of its calls; None (most effects): none at all.
    options: EffectOptions | None = None

    def __post_init__(self) -> None:
        self._result_annotation = _UNSET
        self.task_name = f"duron effect {self.name}"
        self.result_what = f"result of effect {self.name}"

    def with_options(self, options: EffectOptions, owner: str) -> EffectSpec:
        """This effect with ``options`` (set over its own) for one call.

        Raises:
            UsageError: Options on a streaming effect, whose partial state a new
                attempt could not start from.
        """
        current = self.options or EffectOptions()
        merged = current.merged(owner, **options.given())
        if merged is current:
            return self
        if self.kind == "stream":
            raise UsageError(
                f"{owner}(): {self.name} is a streaming effect; retries and "
                "timeouts apply to other effects only"
            )
        spec = EffectSpec(
            self.fn,
            self.name,
            self.sig,
            self.kind,
            self.reducer,
            self.action_annotation,
            options=merged,
        )
        spec._result_annotation = self._result_annotation
        return spec

    @property
    def result_annotation(self) -> Any:
        cached = self._result_annotation
        if cached is not _UNSET:
            return cached
        self.sig.resolve()
        self._result_annotation = ann = self._compute_result_annotation()
        return ann

    def _compute_result_annotation(self) -> Any:
        if self.kind == "stream":
            return self.sig.params[0].annotation if self.sig.params else UNANNOTATED
        ann = self.sig.return_annotation
        if self.kind == "awaitable" and ann is not UNANNOTATED:
            origin = typing.get_origin(ann)
            if origin is not None and typing.get_args(ann):
                return typing.get_args(ann)[-1]
        return ann


_UNSET: Any = object()
_SPEC_ATTR = "__duron_effect__"


def _kind_of(fn: Callable[..., Any]) -> EffectKind:
    target = inspect.unwrap(fn)
    if inspect.isasyncgenfunction(target):
        return "stream"
    if inspect.iscoroutinefunction(target) or asyncio.iscoroutinefunction(target):
        return "async"
    call = getattr(target, "__call__", None)  # noqa: B004 - callable objects
    if (
        call is not None
        and not inspect.isfunction(target)
        and inspect.iscoroutinefunction(call)
    ):
        return "async"
    return "sync"


def _build_spec(
    fn: Callable[..., Any], name: str | None, kind: EffectKind | None
) -> EffectSpec:
    kind = kind or _kind_of(fn)
    sig = Signature(fn, name or qualified_name(fn))
    spec = EffectSpec(fn, sig.name, sig, kind)
    if kind == "stream":
        _configure_stream(spec)
    return spec


def _configure_stream(spec: EffectSpec) -> None:
    sig = spec.sig
    # The reducer is read from the state's annotation now: a name it cannot resolve
    # yet is reported as such (left unresolved, the signature has no parameters).
    sig.resolve()
    if not sig.params:
        raise UsageError(
            f"streaming effect {spec.name} needs a first parameter for its state, "
            "e.g. state: Annotated[int, duron.Reducer(fold)]"
        )
    for extra in sig.params[0].extras:
        if isinstance(extra, Reducer):
            spec.reducer = extra.reducer
    ret = sig.return_annotation
    if typing.get_origin(ret) in (AsyncGenerator, AsyncIterator):
        args = typing.get_args(ret)
        if args:
            spec.action_annotation = args[0]


@overload
def effect(fn: _F, /) -> _F: ...
@overload
def effect(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    total_timeout: float | None = None,
) -> Callable[[_F], _F]: ...
def effect(
    fn: _F | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    total_timeout: float | None = None,
) -> _F | Callable[[_F], _F]:
    """Mark a function as an effect: something that touches the world.

    Durable code runs it with ``await ctx.run(fn, *args)``; its result is recorded in
    the log and replayed from there, so it runs once per job. Supported forms:

    * ``async def``: run as a task of its own on the host's event loop (the one
      running the job), not on the durable code's loop;
    * plain ``def``: run in a worker thread, never blocking the loop;
    * ``async def`` with ``yield`` (a streaming effect): its first parameter is the
      state, annotated ``Annotated[S, duron.Reducer(fold)]``; each yielded action is
      recorded and folded into the state, ``ctx.run`` returns the final state and
      ``ctx.stream`` shows the partial states. After a crash it resumes from the last
      recorded state.

    Type hints are read once; parameters and return value are encoded and validated
    through pydantic. Calling an effect directly inside durable code is an error.

    An effect is not retried unless it says so: ``retry`` makes a failed attempt
    run again after a backoff (each failed attempt is recorded, so a replay
    waits for none and a restarted job waits only what is left). Durable code
    can give other options for some calls with ``ctx.options(...).run(...)``.

    Args:
        fn: The function (when used without parentheses).
        name: The name recorded in logs (default: the function's ``__qualname__``).
            Set it to keep old logs replayable after renaming the function.
        retry: How a failed attempt is tried again (default: it is not).
        timeout: Seconds one attempt may run before it is cancelled and counts as
            failed with a ``TimeoutError`` (a plain ``def`` effect's thread cannot
            be stopped: it runs on, and its result is discarded).
        total_timeout: Seconds the whole call may take, every attempt and backoff
            included; past it the running attempt is cancelled and the call
            fails with a ``TimeoutError``.

    Returns:
        The function, wrapped so that a direct call from durable code is reported.

    Example:
        ```python
        @duron.effect
        async def charge(order_id: int, amount: Decimal) -> Receipt: ...
        ```
    """

    def decorate(f: _F) -> _F:
        if not callable(f):
            raise UsageError(
                f"@duron.effect expects a function, got {type(f).__qualname__}"
            )
        spec = _build_spec(f, name, None)
        options = EffectOptions().merged(
            "@duron.effect", retry=retry, timeout=timeout, total_timeout=total_timeout
        )
        if options.given():
            spec = spec.with_options(options, "@duron.effect")

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if in_durable_code():
                raise UsageError(
                    f"effect {spec.name} was called directly inside durable code; "
                    f"run it through the context: await ctx.run({spec.name}, ...)"
                )
            return f(*args, **kwargs)

        if spec.kind == "async":
            _mark_coroutine_function(wrapper)
        setattr(wrapper, _SPEC_ATTR, spec)
        return wrapper  # type: ignore[return-value]

    if fn is not None:
        return decorate(fn)
    return decorate


def _mark_coroutine_function(fn: Callable[..., Any]) -> None:
    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(fn)
    else:  # asyncio.iscoroutinefunction checks this marker
        fn._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


def effect_spec(fn: Callable[..., Any]) -> EffectSpec:
    """The spec of a decorated effect, or a fresh one for any other callable.

    Undecorated callables (including lambdas returning an awaitable) are accepted
    by ``ctx.run``; their result must be JSON-native unless annotated.
    """
    spec = getattr(fn, _SPEC_ATTR, None)
    if spec is not None:
        if type(fn) is MethodType:  # an effect defined as a method, on its instance
            return _bound_spec(spec, fn)
        return spec  # type: ignore[no-any-return]
    if not callable(fn):
        raise UsageError(f"ctx.run expects a callable, got {type(fn).__qualname__}")
    if isinstance(fn, DurableFn):
        raise UsageError(
            f"ctx.run({fn.name}): {fn.name} is a durable function, not an effect; "
            f"run it as its own job with {fn.__name__}.invoke(storage)"
        )
    try:
        return _undecorated[fn]
    except (KeyError, TypeError):
        pass
    kind = _kind_of(fn)
    if kind == "sync" and getattr(fn, "__name__", "") == "<lambda>":
        kind = "awaitable"  # a lambda is an expression: run it on the loop
    spec = _build_spec(fn, None, kind)
    with contextlib.suppress(TypeError):  # not weak-referenceable: no cache
        _undecorated[fn] = spec
    return spec


_undecorated: weakref.WeakKeyDictionary[Callable[..., Any], EffectSpec] = (
    weakref.WeakKeyDictionary()
)


def _bound_spec(spec: EffectSpec, method: Any) -> EffectSpec:
    """``spec`` for one bound method: ``self`` is neither an input nor the state."""
    template = _method_templates.get(spec.fn)
    if template is None:
        template = _build_spec(method, spec.name, spec.kind)
        _method_templates[spec.fn] = template
    return EffectSpec(
        method,
        template.name,
        template.sig,
        template.kind,
        template.reducer,
        template.action_annotation,
        options=spec.options,
    )


# Per decorated function: its signature as seen through an instance.
_method_templates: weakref.WeakKeyDictionary[Callable[..., Any], EffectSpec] = (
    weakref.WeakKeyDictionary()
)
