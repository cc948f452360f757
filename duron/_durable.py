"""``@duron.durable``: the orchestrating function and how it is invoked."""

from __future__ import annotations

import copy
import inspect
import secrets
import time
import typing
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    TypeVar,
    overload,
)

from duron._codec import (
    UNANNOTATED,
    Codec,
    JSONValue,
    PydanticCodec,
    describe_type,
    explain,
)
from duron._entries import JobStarted
from duron._errors import (
    PayloadEncodeError,
    PayloadError,
    PayloadTooLargeError,
    UsageError,
)
from duron._limits import DEFAULT_MAX_ENTRY_SIZE
from duron._log import encode_entry
from duron._observe import current as current_observer
from duron._options import CallOptions, deadline_at
from duron._signature import Signature, qualified_name

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from duron._context import Context
    from duron._job import Job
    from duron._storage import LogStorage

__all__ = ["DurableFn", "Provided", "durable", "find_durable"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _ProvidedType:
    _instance: _ProvidedType | None = None

    def __new__(cls) -> _ProvidedType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "duron.Provided"


Provided: Any = _ProvidedType()
"""Default value marking a durable parameter that the job injects (streams, signals)."""

_default_codec = PydanticCodec()

# Decorated durable functions by (module, name): how a job store finds the types
# of a job's parameters when input is sent to it by job id. The latest wins.
_decorated: weakref.WeakValueDictionary[tuple[str, str], DurableFn[..., Any]] = (
    weakref.WeakValueDictionary()
)


def find_durable(module: str | None, name: str) -> DurableFn[..., Any] | None:
    """The durable function named ``name`` decorated in ``module`` in this process
    (``None`` if none was); with ``module=None``, the one of that name if only one
    module decorated one."""
    if module is not None:
        return _decorated.get((module, name))
    found = [fn for (_, n), fn in list(_decorated.items()) if n == name]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True, slots=True)
class Injection:
    """A parameter the job provides: ``Stream[T]`` and ``Signal[T]`` carry host input
    into the job (kinds ``stream``, ``signal``), ``StreamWriter[T]`` carries values
    out to the host (kind ``writer``)."""

    name: str
    kind: str
    annotation: Any


def _injection(fn_name: str, name: str, annotation: Any) -> Injection:
    from duron._signal import Signal
    from duron._stream import Stream, StreamWriter

    base = annotation
    if typing.get_origin(base) is typing.Annotated:
        base = typing.get_args(base)[0]
    origin = typing.get_origin(base) or base
    args = typing.get_args(base)
    item = args[0] if args else UNANNOTATED
    kinds = {Stream: "stream", Signal: "signal", StreamWriter: "writer"}
    kind = kinds.get(origin)
    if kind is None:
        raise UsageError(
            f"parameter {name!r} of durable function {fn_name} is marked "
            f"= duron.Provided but annotated {describe_type(annotation)}; provided "
            "parameters are duron.Stream[T], duron.StreamWriter[T] or duron.Signal[T]"
        )
    return Injection(name, kind, item)


class DurableFn(Generic[_P, _T]):
    """A function decorated with ``@duron.durable``. Run it with :meth:`invoke`,
    or submit it to a job store: ``store.submit(fn, *args, **kwargs)``.

    Options of a call (the job's id, ...) are not arguments: they travel on the
    function, ``store.submit(fn.options(job_id="order-42"), ...)``.

    Do not construct it yourself.
    """

    def __init__(
        self,
        fn: Callable[Concatenate[Context, _P], Coroutine[Any, Any, _T]],
        *,
        name: str | None,
        codec: Codec | None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise UsageError(
                f"@duron.durable needs an async def function, but "
                f"{qualified_name(fn)} is not one"
            )
        self.fn = fn
        self.name: str = name or qualified_name(fn)
        self.module: str = getattr(fn, "__module__", "") or ""
        self.codec: Codec = codec if codec is not None else _default_codec
        self.sig: Signature = Signature(fn, self.name)
        params = list(self.sig.sig.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise UsageError(
                f"durable function {self.name} must take the context as its first "
                "parameter: async def fn(ctx: duron.Context, ...)"
            )
        self.provided: tuple[str, ...] = tuple(
            p.name for p in params[1:] if p.default is Provided
        )
        self._injections: tuple[Injection, ...] | None = None
        self._options = CallOptions()
        if self.sig.resolved:
            _ = self.injections  # report a bad Provided annotation at decoration
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__qualname__: str = getattr(fn, "__qualname__", self.name)
        self.__name__: str = getattr(fn, "__name__", self.name)
        self.__module__ = self.module
        _decorated[(self.module, self.name)] = self

    @property
    def injections(self) -> tuple[Injection, ...]:
        """The ``= duron.Provided`` parameters, with what to inject into each."""
        if self._injections is None:
            self.sig.resolve()
            self._injections = tuple(
                _injection(self.name, p.name, p.annotation)
                for p in self.sig.params
                if p.name in self.provided
            )
        return self._injections

    def options(
        self,
        *,
        job_id: str | None = None,
        deadline: datetime | timedelta | float | None = None,
    ) -> DurableFn[_P, _T]:
        """This function carrying options for its calls (the ones given are set;
        ``None`` leaves an option as it is, so ``fn.options(a=1).options(b=2)``
        carries both).

        The copy is the same durable function (same name: a worker given ``fn``
        runs the jobs submitted with ``fn.options(...)``) and takes the same
        arguments.

        Example:
            ```python
            job_id = await store.submit(checkout.options(job_id="order-42"), order)
            ```

        Args:
            job_id: The id of the job ``store.submit()`` makes (default: a random
                one); submitting the same call under the same id again is
                idempotent.
            deadline: When the job is cancelled if it has not ended: an aware
                datetime, or a duration (a timedelta, or seconds) from the job's
                start (``job.start()``, ``store.submit()``). Recorded with the
                job; a job whose deadline passed while nothing ran it is
                cancelled as soon as it runs again.

        Returns:
            A copy of this function with these options.

        Raises:
            UsageError: A bad value, naming the option.
        """
        options = self._options.merged(
            f"{self.name}.options", job_id=job_id, deadline=deadline
        )
        if options is self._options:
            return self
        fn = copy.copy(self)
        fn._options = options
        return fn

    @property
    def call_options(self) -> CallOptions:
        """The options this function carries for its calls (see :meth:`options`)."""
        return self._options

    def encode_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, via: str
    ) -> dict[str, JSONValue]:
        """A job's arguments as its first log entry records them (by name, encoded).

        Args:
            args: Positional arguments after the context.
            kwargs: Keyword arguments.
            via: The call that received them (``"start()"``, ``"submit()"``), for
                the error message.

        Raises:
            UsageError: Bad arguments, a value for a ``= duron.Provided``
                parameter, or a call option (``job_id=``) passed as an argument.
            PayloadError: An argument cannot be encoded.
        """
        self._refuse_options_as_arguments(kwargs)
        bound = self.sig.bind((None, *args), kwargs)
        bound.pop(next(iter(self.sig.sig.parameters)), None)
        for name in self.provided:
            if name in bound:
                raise UsageError(
                    f"parameter {name!r} of {self.name} is provided by the job "
                    f"(= duron.Provided); do not pass it to {via}"
                )
        return self.sig.encode_inputs(self.codec, bound)

    def entry_from(
        self, encoded: dict[str, JSONValue], *, t: float | None = None
    ) -> JobStarted:
        """The job entry of a call whose arguments are already encoded (by
        :meth:`encode_arguments`): a fresh seed, the job clock ``t`` (default:
        now), the deadline this function's options give."""
        now = time.time() if t is None else t
        deadline = self._options.deadline
        return JobStarted(
            self.name,
            encoded,
            secrets.token_hex(8),
            now,
            self.module,
            deadline=None if deadline is None else deadline_at(deadline, now),
        )

    def job_entry(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        via: str,
        job: str | None = None,
        t: float | None = None,
        max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
    ) -> JobStarted:
        """The first entry of a job calling this function with these arguments.

        The one place a job's call is turned into its log entry, for
        ``job.start()`` and ``store.submit()`` alike: the arguments are bound,
        encoded, and checked to decode back as replay will read them, and the
        entry to be writable, before anything is stored.

        Args:
            args: Positional arguments after the context.
            kwargs: Keyword arguments.
            via: The call that received them (``"start()"``, ``"submit()"``), for
                the error message.
            job: The job's label, for the error message, when it has one.
            t: The job clock to record (default: the host's ``time.time()``).
            max_entry_size: The largest entry the log takes, in bytes (the
                storage's ``limits.max_entry_size``).

        Returns:
            The job entry (with a fresh random seed, the deadline this
            function's options give, from ``t``, and what an installed observer
            carries with the job: ``duron.contrib.otel`` stores the trace context
            here).

        Raises:
            UsageError: Bad arguments (see :meth:`encode_arguments`).
            PayloadError: An argument cannot be encoded, would not decode from
                the log, or the entry cannot be written
                (:class:`~duron.PayloadTooLargeError`: it is larger than
                ``max_entry_size``).
        """
        encoded = self.checked_arguments(args, kwargs, via=via, job=job)
        now = time.time() if t is None else t
        deadline = self._options.deadline
        observer = current_observer()
        entry = JobStarted(
            self.name,
            encoded,
            secrets.token_hex(8),
            now,
            self.module,
            context=observer.capture() if observer is not None else None,
            deadline=None if deadline is None else deadline_at(deadline, now),
        )
        self.check_writable(entry, job=job, max_entry_size=max_entry_size)
        return entry

    def checked_arguments(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        via: str,
        job: str | None,
    ) -> dict[str, JSONValue]:
        """:meth:`encode_arguments`, each one checked to decode back as replay
        will read it (see :meth:`job_entry`)."""
        try:
            encoded = self.encode_arguments(args, kwargs, via=via)
        except PayloadError as err:
            if job is None:
                raise
            raise err.at(job=job) from err.__cause__
        for name, data in encoded.items():
            try:
                self.codec.decode(data, self.sig.stored_as(name))
            except Exception as exc:
                raise PayloadEncodeError(
                    what=f"argument {name!r} of {self.name}",
                    type_name=describe_type(self.sig.param(name).annotation),
                    detail=f"would not decode back from the log: {explain(exc)}",
                    job=job,
                ) from exc
        return encoded

    def check_writable(
        self, entry: JobStarted, *, job: str | None, max_entry_size: int
    ) -> None:
        """Raise the :class:`~duron.PayloadError` that keeps a job entry out of
        the log: a value orjson refuses, or an entry over ``max_entry_size``."""
        try:
            raw = encode_entry(entry)
        except TypeError as exc:  # orjson: e.g. an int past 64 bits
            raise PayloadEncodeError(
                what=f"arguments of {self.name}",
                type_name="job entry",
                detail=f"cannot be written to the log: {exc}",
                job=job,
            ) from exc
        if len(raw) > max_entry_size:
            raise PayloadTooLargeError(
                what=f"arguments of {self.name}",
                size=len(raw),
                limit=max_entry_size,
                type_name="job entry",
                job=job,
            )

    def _refuse_options_as_arguments(self, kwargs: dict[str, Any]) -> None:
        """A call option given among the arguments, where the function has no
        parameter of that name, is a mistake: say where it goes."""
        params = self.sig.sig.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return  # every keyword is an argument of the function
        for name in CallOptions.names():
            if name in kwargs and name not in params:
                raise UsageError(
                    f"durable function {self.name} has no parameter {name!r}: "
                    f"{name} is an option of the call, not an argument; pass it on "
                    f"the function: store.submit({self.__name__}.options("
                    f"{name}=...), ...)"
                )

    def invoke(
        self, storage: LogStorage, *, clock: Callable[[], float] | None = None
    ) -> Job[_P, _T]:
        """Open a job on ``storage``; use it as an async context manager.

        Example:
            ```python
            async with greeting_flow.invoke(FileLogStorage(Path("log.jsonl"))) as job:
                await job.start("Alice")  # or: await job.resume()
                result = await job.wait()
            ```

        Args:
            storage: Where the job's log lives.
            clock: The host clock the job records time from, in seconds since the
                epoch (default ``time.time``). Replay takes time from the log; a
                test can pass a fake clock to drive a live run's durable timers.

        Returns:
            The job handle.
        """
        from duron._job import Job

        if clock is None:
            return Job(self, storage)
        return Job(self, storage, clock=clock)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(
            f"durable function {self.name} is not called directly; run it as a job: "
            f"async with {self.__name__}.invoke(storage) as job: await job.start(...)"
        )

    def __repr__(self) -> str:
        given = self._options.given()
        if not given:
            return f"<durable {self.name}>"
        options = ", ".join(f"{k}={v!r}" for k, v in given.items())
        return f"<durable {self.name}.options({options})>"


@overload
def durable(
    fn: Callable[Concatenate[Context, _P], Coroutine[Any, Any, _T]], /
) -> DurableFn[_P, _T]: ...
@overload
def durable(
    *, name: str | None = None, codec: Codec | None = None
) -> Callable[
    [Callable[Concatenate[Context, _P], Coroutine[Any, Any, _T]]], DurableFn[_P, _T]
]: ...
def durable(
    fn: Callable[Concatenate[Context, _P], Coroutine[Any, Any, _T]] | None = None,
    /,
    *,
    name: str | None = None,
    codec: Codec | None = None,
) -> (
    DurableFn[_P, _T]
    | Callable[
        [Callable[Concatenate[Context, _P], Coroutine[Any, Any, _T]]], DurableFn[_P, _T]
    ]
):
    """Mark an async function as durable: replayed from its log, never re-doing effects.

    The function takes a :class:`~duron.Context` first. It must be deterministic:
    everything that touches the world goes through ``ctx.run`` (effects), time
    through ``ctx.time()`` or ``asyncio.sleep`` (a durable timer), randomness
    through ``ctx.random()``. Concurrency with ``asyncio`` or ``anyio`` primitives is
    fine: it replays identically.

    Args:
        fn: The function (when used without parentheses).
        name: The name recorded in the log (default: ``__qualname__``). A log can only
            be resumed by the function of the same name.
        codec: How payloads are encoded (default: :class:`~duron.PydanticCodec`).

    Returns:
        A :class:`DurableFn`; run it with ``fn.invoke(storage)``.

    Example:
        ```python
        @duron.durable
        async def greeting_flow(ctx: duron.Context, name: str) -> str:
            return await ctx.run(work, name)
        ```
    """

    def decorate(
        f: Callable[Concatenate[Context, _P], Coroutine[Any, Any, _T]],
    ) -> DurableFn[_P, _T]:
        return DurableFn(f, name=name, codec=codec)

    if fn is not None:
        return decorate(fn)
    return decorate
