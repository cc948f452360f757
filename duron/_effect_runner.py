"""Running effects live: start each one on the host, turn how it ended into an outcome.

An ``async def`` effect on an asyncio host starts as a bare task whose first step
runs at once (:meth:`~duron._host_backends.AsyncioHost.start_effect`), and a done-callback
reports its end: an effect that never waits costs no loop round at all. Every
other effect (a plain ``def`` in a worker thread, a streaming effect, a lambda
returning an awaitable, any effect on a trio host) runs inside :func:`run_effect`,
a coroutine the host spawns.

Either way the outcome is a :class:`~duron._operations.Done` (or, for each value a
streaming effect yields, an :class:`~duron._operations.Emitted`), made by
:func:`result_outcome` or :func:`raised_outcome`, whose payload went
through :func:`~duron._codec.roundtrip`: durable code gets exactly what a replay
will rebuild, and a value that cannot be recorded fails the job with a
:class:`~duron.PayloadEncodeError` (a :class:`Fatal` outcome) instead of reaching
the log.

Cancellation has one rule (:func:`cancelled_by_job`): the job marks an operation
``stopped`` before it cancels its task (:meth:`Effects.stop`), and then records
nothing for it. A run that ends cancelled without that mark was cancelled by the
effect itself, or by code it handed its task to: that is its outcome, recorded
like any other exception.

An observed run (:mod:`duron._observe`) starts its effects through
:class:`ObservedEffects`, which tells the observer when each attempt starts (in
the context the effect runs in) and ends; an unobserved run pays nothing for it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from duron._codec import roundtrip
from duron._errors import PayloadEncodeError
from duron._host_backends import AsyncioHost
from duron._operations import Done, Emitted, Op
from duron._recorded_errors import error_info

if TYPE_CHECKING:
    import contextvars

    from duron._codec import Codec
    from duron._host_backends import Host
    from duron._observe import RunObserver

__all__ = [
    "Effects",
    "Fatal",
    "ObservedEffects",
    "cancelled_by_job",
    "raised_outcome",
    "run_effect",
]


@dataclass(slots=True, eq=False)
class Fatal:
    """The job cannot go on: the driver raises ``error`` (nothing more is written)."""

    error: BaseException


Report = Callable[[Done | Emitted | Fatal], None]


def cancelled_by_job(op: Op) -> bool:
    """Whether the cancellation ending ``op``'s live run came from the job.

    The one rule: the job marks an operation ``stopped`` before it cancels its
    task (durable code gave up waiting, or the job is stopping). A run that ends
    cancelled without that mark was cancelled by the effect itself or by someone
    else it gave its task to: that is its outcome, recorded like any other error.
    """
    return op.stopped


class Effects:
    """Starts the live effects of one job on its host and reports their outcomes."""

    __slots__ = ("_asyncio", "_codec", "_host", "_label", "_report", "direct")

    def __init__(self, host: Host, codec: Codec, label: str, report: Report) -> None:
        self._host = host
        self._asyncio = host if isinstance(host, AsyncioHost) else None
        # Whether ``async def`` effects start as bare tasks (an asyncio host).
        self.direct: bool = self._asyncio is not None
        self._codec = codec
        self._label = label
        self._report = report

    def start(
        self,
        op: Op,
        *,
        from_durable: bool = False,
        context: contextvars.Context | None = None,
    ) -> Done | Fatal | None:
        """Start ``op``'s effect; its outcome if it ended in its first step.

        Otherwise the outcome is reported when it comes. ``from_durable``: called
        from inside durable code (see :meth:`AsyncioHost.start_effect`).
        ``context``: run it in this one (from ``Host.effect_context``).
        """
        spec = op.spec
        host = self._asyncio
        if host is not None and spec.kind == "async":
            try:
                task = host.start_effect(
                    spec.fn,
                    op.args,
                    op.kwargs,
                    spec.task_name,
                    from_durable=from_durable,
                    context=context,
                )
            except Exception as exc:  # calling it failed: that is its outcome
                return raised_outcome(op, exc)
            if task.done():
                return self._task_outcome(op, task)
            op.task = task
            task.add_done_callback(functools.partial(self._task_ended, op))
            return None
        op.task = self._host.spawn(
            run_effect,
            op,
            self._codec,
            self._label,
            self._report,
            name=spec.task_name,
            context=context,
        )
        return None

    @staticmethod
    def stop(op: Op) -> None:
        """Cancel ``op``'s live run, if any; whatever it ends with is not recorded."""
        op.stopped = True
        task = op.task
        if task is not None:
            task.cancel()

    def _task_ended(self, op: Op, task: asyncio.Task[Any]) -> None:
        outcome = self._task_outcome(op, task)
        if outcome is not None:
            self._report(outcome)

    def _task_outcome(self, op: Op, task: asyncio.Task[Any]) -> Done | Fatal | None:
        """What a finished effect task amounts to (None: no outcome to record)."""
        if task.cancelled():
            try:
                task.result()
            except asyncio.CancelledError as cancelled:
                return raised_outcome(op, cancelled)
        exc = task.exception()
        if exc is None:
            return result_outcome(op, task.result(), self._codec, self._label)
        return raised_outcome(op, exc)


class ObservedEffects(Effects):
    """:class:`Effects` for an observed run: each live attempt is told to the
    observer when it starts, inside the context it runs in, and when it ends
    with an outcome. One that the job stops is not ended here: the observer hears
    of it as abandoned (durable code stopped waiting) or with the run's end."""

    __slots__ = ("_observe", "_unobserved_report")

    def __init__(
        self,
        host: Host,
        codec: Codec,
        label: str,
        report: Report,
        observe: RunObserver,
    ) -> None:
        super().__init__(host, codec, label, self._observed_report)
        self._unobserved_report = report
        self._observe = observe

    def start(
        self,
        op: Op,
        *,
        from_durable: bool = False,
        context: contextvars.Context | None = None,
    ) -> Done | Fatal | None:
        if context is None:
            context = self._host.effect_context()
        # The attempt number: each start of an operation is its first attempt.
        context.run(self._observe.effect_started, op.name, op.id, 1)
        outcome = super().start(op, from_durable=from_durable, context=context)
        if type(outcome) is Done:
            self._observe.effect_ended(op.id, 1, outcome.cause)
        return outcome

    def _observed_report(self, outcome: Done | Emitted | Fatal) -> None:
        if type(outcome) is Done:
            self._observe.effect_ended(outcome.op.id, 1, outcome.cause)
        self._unobserved_report(outcome)


def raised_outcome(op: Op, exc: BaseException) -> Done | None:
    """The outcome of an effect that raised ``exc``: an error to record, or None
    when there is nothing to record (the job stopped it; a ``KeyboardInterrupt``
    and the like, which go on up)."""
    if isinstance(exc, asyncio.CancelledError):
        if cancelled_by_job(op):
            return None
    elif not isinstance(exc, Exception):
        return None
    return Done(op, None, error_info(exc), cause=exc)


def result_outcome(op: Op, value: Any, codec: Codec, label: str) -> Done | Fatal:
    """The outcome of an effect that returned ``value``: its encoded result, or the
    job's failure when the value cannot be recorded as annotated."""
    spec = op.spec
    try:
        data, decoded = roundtrip(
            codec,
            value,
            spec.result_annotation,
            what=spec.result_what,
            job=label,
            position=op.id,
        )
    except PayloadEncodeError as err:
        return Fatal(err)
    return Done(op, data, decoded=decoded)


class _Refused(Exception):
    """Raised inside a streaming effect's run: Duron refused a value; fail the job."""

    def __init__(self, error: PayloadEncodeError) -> None:
        super().__init__(error)
        self.error = error


async def run_effect(op: Op, codec: Codec, label: str, report: Report) -> None:
    """Run ``op``'s effect to its end and report its outcome; silent if the job
    stopped it."""
    spec = op.spec
    if op.stopped:
        return
    try:
        if spec.kind == "async":
            value = await spec.fn(*op.args, **op.kwargs)
        elif spec.kind == "sync":
            value = await anyio.to_thread.run_sync(
                functools.partial(spec.fn, *op.args, **op.kwargs)
            )
        elif spec.kind == "stream":
            value = await _run_stream(op, codec, label, report)
        else:
            value = spec.fn(*op.args, **op.kwargs)
            if inspect.isawaitable(value):
                value = await value
    except _Refused as refused:
        report(Fatal(refused.error))
        return
    except BaseException as exc:
        outcome = raised_outcome(op, exc)
        if outcome is None:
            raise
        report(outcome)
        return
    report(result_outcome(op, value, codec, label))


async def _run_stream(op: Op, codec: Codec, label: str, report: Report) -> Any:
    spec = op.spec
    rest = op.args[1:] if op.args else ()
    kwargs = dict(op.kwargs)
    kwargs.pop(spec.sig.params[0].name, None)
    state = op.state  # the folded state so far: a resumed stream continues from it
    agen = spec.fn(state, *rest, **kwargs)
    try:
        action = await agen.__anext__()
        while True:
            try:
                # Fold what replay will fold: the action as the log gives it back.
                data, action = roundtrip(
                    codec,
                    action,
                    spec.action_annotation,
                    what=f"value yielded by streaming effect {spec.name}",
                    job=label,
                    position=op.id,
                )
            except PayloadEncodeError as err:
                raise _Refused(err) from err
            report(Emitted(op, data, decoded=action))
            state = spec.reducer(state, action)
            action = await agen.asend(state)
    except StopAsyncIteration:
        return state
    finally:
        await agen.aclose()
