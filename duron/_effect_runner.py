"""Running effects live: start each one on the host, turn how it ended into an outcome.

An ``async def`` effect on an asyncio host starts as a bare task whose first step
runs at once (:meth:`~duron._host_backends.AsyncioHost.start_effect`), and a done-callback
reports its end: an effect that never waits costs no loop round at all. Every
other effect (a plain ``def`` in a worker thread, a streaming effect, a lambda
returning an awaitable, any effect on a trio host) runs inside :func:`run_effect`,
a coroutine the host spawns.

An effect call with options (a retry policy, timeouts) runs inside
:func:`~duron._attempts.run_attempts` instead, attempt after attempt; so does one
resumed after failed attempts.

Either way the outcome is a :class:`~duron._operations.Done` (or, for each value a
streaming effect yields, an :class:`~duron._operations.Emitted`), made by
:func:`~duron._effect_outcome.result_outcome` or
:func:`~duron._effect_outcome.raised_outcome` (see :mod:`duron._effect_outcome`).

Every run sees its operation as :func:`duron.current_operation`: the
:data:`~duron._identity.CURRENT_OPERATION` of its context when it runs inside a
coroutine of Duron's, else (a bare task) the one :meth:`Effects.running` knows by
its task, at no cost to an effect that never asks.

Cancellation has one rule (:func:`~duron._effect_outcome.cancelled_by_job`): the job marks an operation
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
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from duron._attempts import run_attempts
from duron._codec import roundtrip
from duron._effect_outcome import Fatal, Report, raised_outcome, result_outcome
from duron._errors import PayloadEncodeError
from duron._host_backends import AsyncioHost
from duron._identity import CURRENT_JOB, CURRENT_OPERATION
from duron._operations import Attempted, Done, Emitted, Op

if TYPE_CHECKING:
    import contextvars

    from duron._codec import Codec
    from duron._host_backends import Host
    from duron._identity import JobIdentity
    from duron._observe import RunObserver
    from duron._storage import Lease

__all__ = ["Effects", "Fatal", "ObservedEffects", "run_effect"]


class Effects:
    """Starts the live effects of one job on its host and reports their outcomes.

    Args:
        host: The host backend effects run on.
        codec: The job's codec.
        label: The job's label, for errors.
        report: Where outcomes go (the driver's queue).
        identity: The job's id and seed (operation keys, retry jitter).
        clock: The job's host clock (when retries are due).
    """

    __slots__ = (
        "_asyncio",
        "_clock",
        "_codec",
        "_eager",
        "_host",
        "_label",
        "_report",
        "_waiting",
        "direct",
        "identity",
        "lease",
    )

    def __init__(
        self,
        host: Host,
        codec: Codec,
        label: str,
        report: Report,
        identity: JobIdentity,
        clock: Callable[[], float],
    ) -> None:
        self._host = host
        self._asyncio = host if isinstance(host, AsyncioHost) else None
        # Whether ``async def`` effects start as bare tasks (an asyncio host).
        self.direct: bool = self._asyncio is not None
        self._codec = codec
        self._label = label
        self._report = report
        self.identity: JobIdentity = identity
        self._clock = clock
        # Bare effect tasks: the one running its first step here, and those that
        # went on waiting (for current_operation()).
        self._eager: Op | None = None
        self._waiting: dict[asyncio.Task[Any], Op] = {}
        # The lease the job writes under, checked before an attempt after a
        # backoff (the driver checks it before an effect starts).
        self.lease: Lease | None = None
        if self._asyncio is not None:
            self._asyncio.provide(CURRENT_JOB, self)

    def running(self) -> Op | None:
        """The operation of the bare effect task asking, if it is one of this
        job's."""
        op = self._eager
        if op is not None:  # its first step runs now: nothing else can
            return op
        task = asyncio.current_task()
        return self._waiting.get(task) if task is not None else None

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
        plain = spec.options is None and op.attempts is None
        if host is not None and spec.kind == "async" and plain:
            self._eager = op
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
            finally:
                self._eager = None
            if task.done():
                return self._task_outcome(op, task)
            op.task = task
            self._waiting[task] = op
            task.add_done_callback(functools.partial(self._task_ended, op))
            return None
        op.origin = self.identity
        if not plain and spec.kind != "stream":
            op.task = self._host.spawn(
                run_attempts,
                op,
                self._codec,
                self._label,
                self._report,
                self._clock,
                self.identity.seed,
                self.lease,
                name=spec.task_name,
                context=context,
            )
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
        del self._waiting[task]
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
    """:class:`Effects` for an observed run: each live start of an operation is
    told to the observer when it starts, inside the context it runs in, and when
    it ends with an outcome. One that the job stops is not ended here: the
    observer hears of it as abandoned (durable code stopped waiting) or with the
    run's end. A call its retry policy runs again is one start: its attempt
    number is the one it starts at (above 1 when resumed after recorded
    attempts), and its failed attempts are in the log."""

    __slots__ = ("_observe", "_started_at", "_unobserved_report")

    def __init__(
        self,
        host: Host,
        codec: Codec,
        label: str,
        report: Report,
        identity: JobIdentity,
        clock: Callable[[], float],
        observe: RunObserver,
    ) -> None:
        super().__init__(host, codec, label, self._observed_report, identity, clock)
        self._unobserved_report = report
        self._observe = observe
        self._started_at: dict[int, int] = {}  # attempt numbers other than 1

    def start(
        self,
        op: Op,
        *,
        from_durable: bool = False,
        context: contextvars.Context | None = None,
    ) -> Done | Fatal | None:
        if context is None:
            context = self._host.effect_context()
        attempt = len(op.attempts) + 1 if op.attempts else 1
        if attempt != 1:
            self._started_at[op.id] = attempt
        context.run(self._observe.effect_started, op.name, op.id, attempt)
        outcome = super().start(op, from_durable=from_durable, context=context)
        if type(outcome) is Done:
            self._observe.effect_ended(op.id, attempt, outcome.cause)
        return outcome

    def _observed_report(self, outcome: Done | Emitted | Attempted | Fatal) -> None:
        if type(outcome) is Done:
            attempt = self._started_at.pop(outcome.op.id, 1)
            self._observe.effect_ended(outcome.op.id, attempt, outcome.cause)
        self._unobserved_report(outcome)


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
    CURRENT_OPERATION.set(op)  # this task's own context
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
