"""What durable code asks of its job, through :class:`~duron.Context`.

Each call becomes an operation of the engine at the next position (an effect, a
durable future, a ``ctx.patched`` question) and hands back what durable code
awaits. This is also where the driver's two shortcuts live, leaves of its general
path that the engine composes the same entries for: a replayed call whose
recorded end comes next in the log takes it at once (:meth:`_replay_at_once`), and
a live ``async def`` effect that ends in its first step on a quiet job is
committed from inside ``ctx.run`` (:meth:`_run_at_once`). ``Driver.shortcuts =
False`` turns both off; the test suite checks that nothing else changes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from duron._continue import ContinueAsNew, next_run_entry
from duron._delivery import OpFuture
from duron._durable_logger import DurableLogger
from duron._effect_runner import Effects
from duron._entries import JobStarted
from duron._errors import PayloadError, UsageError
from duron._limits import limits_of
from duron._operations import Done, Op
from duron._recorded_errors import rebuild

if TYPE_CHECKING:
    import logging

    from duron._driver import Driver
    from duron._effect import EffectSpec
    from duron._json import JSONValue

__all__ = ["DurableCalls", "Recorded"]

_running_loop = asyncio.events._get_running_loop


class Recorded:
    """An effect's outcome handed to ``ctx.run`` at once, without a future."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value: Any = value
        self.error: BaseException | None = error


class DurableCalls:
    """The durable side of one run (``Context`` calls these)."""

    __slots__ = ("_driver", "_random_calls", "replayed")

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._random_calls = 0
        self.replayed: int = 0  # effects issued while replaying

    def check_loop(self, what: str) -> None:
        d = self._driver
        if _running_loop() is not d.loop:
            raise UsageError(
                f"{what} was called outside this job's durable code; a Context is "
                "only valid inside the durable function it was given to"
            )

    def issue_effect(
        self,
        spec: EffectSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        sink: Any = None,
    ) -> asyncio.Future[Any] | Recorded:
        """Register an effect call; the future to await, or its :class:`Recorded`
        outcome when one of the shortcuts (see the module docstring) applies."""
        d = self._driver
        if _running_loop() is not d.loop:
            self.check_loop(f"ctx.run({spec.name})")
        engine = d.engine
        try:
            inputs = spec.sig.encode_call(d.codec, args, kwargs)
        except PayloadError as err:
            raise err.at(job=d.label, position=engine.next_id) from err.__cause__
        except UsageError as err:  # bad arguments: nothing recorded, nothing run
            raise UsageError(
                f"job {d.label}: position {engine.next_id}: {err}"
            ) from err
        streaming = spec.kind == "stream"
        if sink is None and not streaming and d.shortcuts:
            if engine.replaying:
                recorded = self._replay_at_once(spec, inputs)
                if recorded is not None:
                    return recorded
            elif spec.kind == "async" and spec.options is None and d.quiet_for_live():
                return self._run_at_once(spec, args, kwargs, inputs)
        op = engine.issue(
            Op(
                "effect",
                spec.name,
                inputs,
                streaming=streaming,
                spec=spec,
                args=args,
                kwargs=kwargs,
            )
        )
        op.sink = sink
        if streaming:
            op.state = args[0] if args else kwargs.get(spec.sig.params[0].name)
        if not engine.replaying:
            d.launch(op)
        else:
            self.replayed += 1
        return self._await(op)

    def _await(self, op: Op) -> OpFuture:
        d = self._driver
        fut = OpFuture(loop=d.loop)
        fut.bind(op, self._op_cancelled)
        op.fut = fut
        return fut

    def _replay_at_once(
        self, spec: EffectSpec, inputs: dict[str, JSONValue]
    ) -> Recorded | None:
        """The call's recorded outcome, if stepping would hand it over next.

        Normally the task suspends on its future, the loop goes quiet and the
        driver delivers the next entry. When nothing else is ready and the engine
        says the next entries are exactly this call's (no timer before them), the
        task may as well go on with the outcome. Anything unusual (a payload that
        no longer decodes) is left to the general path, which reports it.
        """
        d = self._driver
        if not d.quiet_for_replay():
            return None
        engine, loop = d.engine, d.loop
        done = engine.recorded_at_once(
            "effect", spec.name, inputs, loop.next_deadline()
        )
        if done is None:
            return None
        if done.error is None:
            try:
                out = Recorded(
                    d.codec.decode(done.result, spec.result_annotation), None
                )
            except Exception:
                return None
        else:
            out = Recorded(None, rebuild(done.error))
        engine.take_at_once(done)
        loop.advance(done.t)  # only moves the clock: no timer is due (checked)
        self.replayed += 1
        return out

    def _run_at_once(
        self,
        spec: EffectSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: dict[str, JSONValue],
    ) -> Recorded | OpFuture:
        """Start a live effect from durable code; if it ends in its first step,
        commit it alone, now, as the driver's next round would, and hand the
        outcome over. An effect that waits continues as usual."""
        d = self._driver
        op = d.engine.issue(
            Op("effect", spec.name, inputs, spec=spec, args=args, kwargs=kwargs)
        )
        outcome = d.start_from_durable(op)
        if type(outcome) is Done and d.commit_at_once(outcome):
            if outcome.error is not None:
                return Recorded(None, rebuild(outcome.error, outcome.cause))
            return Recorded(outcome.decoded, None)
        if outcome is not None:
            d.push(outcome)
        return self._await(op)

    def _op_cancelled(self, op: Op) -> None:
        """Durable code gave up waiting for ``op``: stop it, record nothing more."""
        d = self._driver
        if d.engine.abandon(op):
            Effects.stop(op)
            if d.observe is not None and op.kind == "effect":
                d.observe.effect_abandoned(op.id)

    def issue_future(
        self, annotation: Any, name: str | None
    ) -> tuple[str, asyncio.Future[Any]]:
        d = self._driver
        self.check_loop("ctx.create_future")
        op = d.engine.issue(Op("future", name or "future"))
        op.annotation = annotation
        op.issued_at = d.loop.time()
        return str(op.id), self._await(op)

    def patch_query(self, change_id: str) -> asyncio.Future[bool]:
        d = self._driver
        self.check_loop(f"ctx.patched({change_id!r})")
        fut: asyncio.Future[bool] = d.loop.create_future()
        d.ask_patched(change_id, fut)
        return fut

    @property
    def label(self) -> str:
        """The job's label."""
        return self._driver.label

    @property
    def run_number(self) -> int:
        """Which run of a job that continues as new this is (0: the first)."""
        return self._driver.run_number

    @property
    def job_store(self) -> Any:
        """The job store the job's log belongs to (its ``start_child`` starts
        child jobs), or ``None`` for a log of its own (a file, memory)."""
        store = getattr(self._driver.storage, "store", None)
        return store if callable(getattr(store, "start_child", None)) else None

    def logger(self, logger: logging.Logger) -> DurableLogger:
        """``logger`` for durable code: silent while the run replays."""
        d = self._driver
        return DurableLogger(
            logger, d.label, d.dfn.name, d.replaying_recorded, self.position
        )

    def position(self) -> int:
        """The position of the next operation durable code issues."""
        return self._driver.engine.next_id

    def time(self) -> float:
        """The job clock (the durable loop's)."""
        return self._driver.loop.time()

    def continue_as_new(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ContinueAsNew:
        """The :class:`~duron.ContinueAsNew` that ends this run and starts the
        next one with these arguments (checked here, in durable code)."""
        d = self._driver
        current = JobStarted(
            d.dfn.name,
            {},
            d.seed,
            d.started,
            context=d.context,
            deadline=d.job_deadline,
            run=d.run_number,
        )
        entry = next_run_entry(
            d.dfn,
            current,
            args,
            kwargs,
            t=d.loop.time(),
            job=d.label,
            max_entry_size=limits_of(d.storage).max_entry_size,
        )
        return ContinueAsNew(d.label, entry)

    def next_random_seed(self) -> str:
        d = self._driver
        self._random_calls += 1
        return f"{d.seed}:{self._random_calls}"
