"""The driver: one run of a durable function over one log, replayed then live.

It pumps three things and owns none of their rules: the engine
(:mod:`duron._engine`: what was recorded, what to write), the durable loop
(:mod:`duron._durable_loop`: where durable code runs, on a virtual clock) and the
storage (:class:`~duron.LogStorage`). Effects run on the host through
:mod:`duron._effect_runner`; outcomes reach durable code through :mod:`duron._delivery`.

Replay: read entries into the engine, ask it what comes next, fire the timers it
says fall first, deliver what it hands back, run the loop until nothing is ready,
answer ``ctx.patched`` questions; until the log ends.

Live: effects run on the host and report their outcomes into a queue; each round
takes every outcome that is ready, writes them in one append (the engine composes
it), and only then delivers them, one at a time, each at the write's time. Two
shortcuts spare the queue, and are leaves of this same path (the engine composes
what they write): a replayed call whose recorded end is next in the log gets it
at once, and a live ``async def`` effect that finishes in its first step on a
quiet job is committed from inside ``ctx.run``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from duron._codec import decode_recorded, roundtrip
from duron._delivery import OpFuture, deliver_done, deliver_emit, inject
from duron._durable_loop import DurableLoop
from duron._effect_runner import Effects, Fatal
from duron._engine import Engine
from duron._entries import ErrorInfo
from duron._errors import (
    DuronError,
    EffectError,
    JobCancelledError,
    NonDeterminismError,
    PayloadError,
    UsageError,
)
from duron._exceptions import error_info, rebuild
from duron._host_input import HostInput
from duron._hosts import host_for
from duron._log import decode_entry
from duron._log_writer import LogWriter
from duron._operations import (
    LOG_ENDED,
    NEED_ENTRIES,
    Cancelled,
    Done,
    Emitted,
    Ended,
    FireTimer,
    Op,
    Outcome,
)

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from duron._durable import DurableFn
    from duron._effect import EffectSpec
    from duron._entries import Entry
    from duron._host_streams import OutputChannel
    from duron._hosts import AnyioHost, AsyncioHost
    from duron._json import JSONValue
    from duron._storage import LogStorage

__all__ = ["CHECKPOINT_EVERY", "START_FLUSH_DELAY", "Driver", "JobOutcome", "Recorded"]

START_FLUSH_DELAY = 0.05
"""Seconds an operation may run before its ``start`` entry is written on its own."""

CHECKPOINT_EVERY = 64
"""Steps (effects finished at once included) between two yields to the host loop."""

READ_AHEAD = 256
"""Entries read from storage at a time while replaying."""

_running_loop = asyncio.events._get_running_loop


@dataclass(slots=True)
class Recorded:
    """An effect's outcome handed to ``ctx.run`` at once, without a future."""

    value: Any
    error: BaseException | None


@dataclass(slots=True)
class JobOutcome:
    """How a run ended: a decoded result, or an exception for ``wait()`` to raise."""

    result: Any = None
    error: BaseException | None = None
    recorded_error: ErrorInfo | None = None
    position: int = 0
    finished: bool = True  # False: a replay-only run stopped where the log ends


class Driver:
    """One run of a durable function over one log (see the module docstring).

    ``Driver.shortcuts = False`` turns both shortcuts off (every call takes the
    general path); the test suite checks that logs and results are the same.

    Args:
        dfn: The durable function.
        storage: Its log.
        seed: The job's random seed (from its job entry).
        started: The job clock at its job entry.
        replaying: Whether the log holds more than the job entry.
        clock: The host clock (seconds since the epoch) live entries are stamped
            with; replay takes time from the log instead.
    """

    shortcuts: bool = True

    def __init__(
        self,
        dfn: DurableFn[..., Any],
        storage: LogStorage,
        *,
        seed: str,
        started: float,
        replaying: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dfn = dfn
        self.storage = storage
        self.codec = dfn.codec
        self.label: str = storage.label
        self.seed = seed
        self.clock = clock
        self.loop = DurableLoop(started)  # type: ignore[abstract]
        self.engine = Engine(
            self.label, replaying=replaying, same_inputs=self._same_inputs
        )
        self.live = anyio.Event()  # replay is over: host input may be recorded
        self.ended = False
        self.closing = False  # the host is stopping the job: start no more effects
        self.root: asyncio.Task[Any] | None = None
        self.entries_read = 0
        self.writer = LogWriter(storage, dfn.name, self._name_at)
        self.outputs: dict[str, OutputChannel] = {}
        self.inputs: dict[str, Op] = {}
        self.injected: dict[str, Any] = inject(self)
        self.host_input = HostInput(self)
        self._events: deque[Outcome | Fatal] = deque()
        self._to_launch: list[Op] = []
        self._host: AsyncioHost | AnyioHost | None = None
        self._effects: Effects | None = None
        self._records: AsyncIterator[tuple[int, bytes]] | None = None
        self._patch_queries: list[tuple[str, asyncio.Future[bool]]] = []
        self._unyielded = 0
        self._flush_due = False
        self._random_calls = 0

    # -- running ---------------------------------------------------------------------

    async def run(
        self,
        tg: TaskGroup,
        main: Callable[[], Any],
        records: AsyncIterator[tuple[int, bytes]] | None,
        *,
        replay_only: bool = False,
    ) -> JobOutcome:
        """Replay ``records`` (the log after its job entry), then run live to the end.

        With ``replay_only`` (verification), stop where the log ends instead: no
        effect runs and nothing is written; the outcome then has ``finished=False``
        unless the log recorded the job's end.
        """
        self._host = host = host_for(tg)
        self._effects = Effects(host, self.codec, self.label, self.push)
        self._records = records
        if records is not None:
            # Read before durable code starts, so that its first call can take
            # a recorded end at once; a log of its job entry alone is live at once.
            await self._read_ahead()
            if self.engine.exhausted:
                self.engine.go_live()
                records = None
        self.root = self.loop.spawn(main(), contextvars.copy_context())
        await self._settle()
        if records is not None:
            ended = await self._replay()
            if ended is not None:
                return await self._finished_from_log(ended)
        if replay_only:
            return JobOutcome(finished=False, position=self.engine.next_id)
        return await self._live()

    async def _replay(self) -> Ended | None:
        """Deliver the log's entries; the log's end entry, or None where it stops."""
        engine, loop = self.engine, self.loop
        while True:
            try:
                event = engine.next_event(loop.next_deadline())
            except NonDeterminismError as err:
                raise await self._earlier_divergence(err) from None
            match event:
                case Done() | Emitted() | Cancelled():
                    loop.advance(event.t)  # no timer is due by then (the engine said)
                    self._deliver(event)
                case FireTimer(deadline=deadline):
                    loop.advance(deadline)
                case Ended():
                    return event
                case _ if event is NEED_ENTRIES:
                    await self._read_ahead()
                    continue
                case _:
                    assert event is LOG_ENDED
                    return None
            loop.run_ready()
            if self._patch_queries:
                await self._settle()

    async def _read_ahead(self) -> None:
        """Read up to :data:`READ_AHEAD` more entries into the engine."""
        records, engine = self._records, self.engine
        if records is None:
            engine.receive_end()
            return
        label = self.label
        batch: list[tuple[int, Entry]] = []
        try:
            for _ in range(READ_AHEAD):
                offset, raw = await records.__anext__()
                batch.append((offset, decode_entry(raw, job=label, offset=offset)))
        except StopAsyncIteration:
            self._records = None
            engine.receive_end()
        finally:
            engine.receive_many(batch)
            self.entries_read += len(batch)

    async def _earlier_divergence(
        self, err: NonDeterminismError
    ) -> NonDeterminismError:
        """``err``, or the divergence further back that the log shows (read ahead)."""
        while (earlier := self.engine.earlier_divergence(err.position)) is NEED_ENTRIES:
            await self._read_ahead()
        return earlier if earlier is not None else err

    async def _finished_from_log(self, ended: Ended) -> JobOutcome:
        engine = self.engine
        while engine.next_event(None) is NEED_ENTRIES:
            await self._read_ahead()  # anything after the end is damage: it raises
        root = self.root
        assert root is not None
        engine.check_end(ended, self._code_end() if root.done() else None)
        return self._outcome_from(ended.result, ended.error, None)

    async def _live(self) -> JobOutcome:
        loop, root, host = self.loop, self.root, self._host
        assert root is not None
        assert host is not None
        if self.engine.replaying:
            self._resume_pending()
        self.live.set()
        await self._advance(max(loop.time(), self.clock()))
        flusher = host.spawn(self._flusher, name=f"duron flusher {self.label}")
        try:
            await self._run_live(root)
        finally:
            flusher.cancel()
        self.stop_effects()
        code_end = self._code_end()
        error = ErrorInfo.from_json(code_end) if "type" in code_end else None
        t = loop.time()
        await self.writer.append(self.engine.end(code_end.get("result"), error, t, t))
        cause = None if root.cancelled() else root.exception()
        return self._outcome_from(code_end.get("result"), error, cause)

    def _resume_pending(self) -> None:
        """The log ended: what was issued but not finished continues live."""
        engine = self.engine
        for op in engine.go_live():
            if op.fut.cancelled():  # durable code stopped waiting meanwhile
                engine.abandon(op)
            elif op.kind == "effect":
                self._to_launch.append(op)

    async def _run_live(self, root: asyncio.Task[Any]) -> None:
        loop, host, events, engine = self.loop, self._host, self._events, self.engine
        assert host is not None
        while not root.done():
            if self._to_launch:
                self._launch()
            if not events and not engine.has_staged:
                await self._wait()
                if not events and not engine.has_staged:
                    deadline = loop.next_deadline()
                    if deadline is not None and deadline <= self.clock():
                        loop.advance(deadline)
                        if self._patch_queries:
                            await self._settle()
                    continue
            await self._commit()
            self._unyielded += 1
            if self._unyielded >= CHECKPOINT_EVERY:
                # Effects that finish at once never make us wait: let the host's
                # other tasks run now and then.
                self._unyielded = 0
                await host.checkpoint()

    async def _commit(self) -> None:
        """Append every ready outcome in one write, then deliver them in order."""
        loop, engine = self.loop, self.engine
        t = max(loop.time(), self.clock())
        batch: list[Any] = list(self._events)
        self._events.clear()
        for event in batch:
            if type(event) is Fatal:
                raise event.error
        entries = engine.commit(batch, t, loop.time())
        if entries:
            await self.writer.append(entries)
        engine.committed(batch)
        for event in batch:
            if event.ack is not None:
                event.recorded = True
                event.ack.set()
        for event in batch:
            if not loop.advance_quietly(t):
                await self._advance(t)
            self._deliver(event)
            loop.run_ready()
            if self._patch_queries:
                await self._settle()

    async def _wait(self) -> None:
        """Sleep until an outcome arrives or the next timer is due."""
        host = self._host
        assert host is not None
        if self._flush_due:
            await self._flush_starts()
            if self._events:
                return
        deadline = self.loop.next_deadline()
        delay = None if deadline is None else deadline - self.clock()
        if delay is None or delay > 0:
            await host.sleep(delay)
        if self._flush_due and not self._events:
            await self._flush_starts()

    async def _flush_starts(self) -> None:
        self._flush_due = False
        starts = self.engine.flush_starts(self.loop.time())
        if starts:
            await self.writer.append(starts)

    async def _flusher(self) -> None:
        """Every so often, have an idle driver record what is still running."""
        host = self._host
        assert host is not None
        while True:
            await anyio.sleep(START_FLUSH_DELAY)
            if self.engine.has_unflushed:
                self._flush_due = True
                host.wake()

    def _launch(self) -> None:
        effects = self._effects
        assert effects is not None
        if not self.closing:
            push = self.push
            for op in self._to_launch:
                if not op.abandoned:
                    outcome = effects.start(op)
                    if outcome is not None:
                        push(outcome)
        self._to_launch.clear()

    def push(self, event: Outcome | Fatal) -> None:
        """Queue an outcome for the next write (and wake the driver)."""
        self._events.append(event)
        host = self._host
        if host is not None:
            host.wake()

    def stop_effects(self) -> None:
        """The job is stopping: cancel what still runs live, record none of it."""
        self.closing = True
        for op in self.engine.pending.values():
            if op.task is not None:
                Effects.stop(op)
            else:
                op.stopped = True

    async def aclose(self) -> None:
        """Cancel the effects still running and wait for them to stop."""
        self.stop_effects()
        if self._host is not None:
            await self._host.aclose()

    def shutdown(self) -> None:
        """The run is over: wake host readers and writers still waiting on it."""
        self.ended = True
        self.live.set()
        for ch in self.outputs.values():
            ch.notify()
        for event in self._events:
            if not isinstance(event, Fatal) and event.ack is not None:
                event.ack.set()
        self._events.clear()
        self.loop.close()

    # -- stepping durable code -------------------------------------------------------

    def _deliver(self, event: Outcome) -> None:
        match event:
            case Done(op=op) if not op.abandoned:
                deliver_done(
                    self, op, event.result, event.error, event.cause, event.decoded
                )
            case Emitted(op=op) if not op.abandoned:
                deliver_emit(self, op, event.value, event.decoded)
            case Cancelled():
                root = self.root
                if root is not None and not root.done():
                    root.cancel("the job was cancelled")

    async def _advance(self, to: float) -> None:
        """Move the clock to ``to`` one timer deadline at a time."""
        loop = self.loop
        while (deadline := loop.next_deadline()) is not None and deadline <= to:
            loop.advance(deadline)
            if self._patch_queries:
                await self._settle()
        loop.advance(to)

    async def _settle(self) -> None:
        """Run the loop until nothing is ready, answering ``ctx.patched`` questions."""
        loop, engine = self.loop, self.engine
        loop.run_ready()
        while self._patch_queries:
            queries, self._patch_queries = self._patch_queries, []
            for change_id, fut in queries:
                if fut.done():
                    continue
                while (taken := engine.patched(change_id)) is None:
                    await self._read_ahead()
                fut.set_result(taken)
            loop.run_ready()

    # -- what durable code calls (through Context) -----------------------------------

    def check_loop(self, what: str) -> None:
        if _running_loop() is not self.loop:
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
        if _running_loop() is not self.loop:
            self.check_loop(f"ctx.run({spec.name})")
        engine = self.engine
        try:
            inputs = spec.sig.encode_call(self.codec, args, kwargs)
        except PayloadError as err:
            raise err.at(job=self.label, position=engine.next_id) from err.__cause__
        streaming = spec.kind == "stream"
        if sink is None and not streaming and self.shortcuts:
            if engine.replaying:
                recorded = self._replay_at_once(spec, inputs)
                if recorded is not None:
                    return recorded
            elif spec.kind == "async" and self._quiet():
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
            self._to_launch.append(op)
        return self._await(op)

    def _await(self, op: Op) -> OpFuture:
        fut = OpFuture(loop=self.loop)
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
        if self._patch_queries or self.loop.ready:
            return None
        engine, loop = self.engine, self.loop
        done = engine.recorded_at_once(
            "effect", spec.name, inputs, loop.next_deadline()
        )
        if done is None:
            return None
        if done.error is None:
            try:
                out = Recorded(
                    self.codec.decode(done.result, spec.result_annotation), None
                )
            except Exception:
                return None
        else:
            out = Recorded(None, rebuild(done.error))
        engine.take_at_once(done)
        loop.advance(done.t)  # only moves the clock: no timer is due (checked)
        return out

    def _quiet(self) -> bool:
        """Whether a live effect that ends at once may be committed from durable
        code: nothing but this call is ready, due, unrecorded or being asked, the
        storage can append without waiting and the host is asyncio."""
        effects = self._effects
        return (
            not self._events
            and not self._to_launch
            and not self._patch_queries
            and self._unyielded < CHECKPOINT_EVERY
            and not self.closing
            and effects is not None
            and effects.direct
            and self.writer.can_append_now
            and self.engine.idle
            and not self.loop.ready
        )

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
        effects = self._effects
        assert effects is not None
        op = self.engine.issue(
            Op("effect", spec.name, inputs, spec=spec, args=args, kwargs=kwargs)
        )
        outcome = effects.start(op, from_durable=True)
        if type(outcome) is Done and self._commit_at_once(outcome):
            if outcome.error is not None:
                return Recorded(None, rebuild(outcome.error, outcome.cause))
            return Recorded(outcome.decoded, None)
        if outcome is not None:
            self.push(outcome)
        return self._await(op)

    def _commit_at_once(self, done: Done) -> bool:
        """Commit ``done`` alone, now; False (nothing written) if a timer is due
        first or the storage would have to wait."""
        loop, engine = self.loop, self.engine
        t = max(loop.time(), self.clock())
        if loop.due_by(t):
            return False
        try:
            if not self.writer.append_now(engine.commit_alone(done, t)):
                return False
        except Exception as exc:  # the driver fails the job with it
            self.push(Fatal(exc))
            return False
        self._unyielded += 1
        loop.advance(t)  # only moves the clock: no timer is due by t (checked)
        return True

    def _op_cancelled(self, op: Op) -> None:
        """Durable code gave up waiting for ``op``: stop it, record nothing more."""
        if self.engine.abandon(op) and op.task is not None:
            Effects.stop(op)

    def issue_future(
        self, annotation: Any, name: str | None
    ) -> tuple[str, asyncio.Future[Any]]:
        self.check_loop("ctx.create_future")
        op = self.engine.issue(Op("future", name or "future"))
        op.annotation = annotation
        return str(op.id), self._await(op)

    def patch_query(self, change_id: str) -> asyncio.Future[bool]:
        self.check_loop(f"ctx.patched({change_id!r})")
        fut: asyncio.Future[bool] = self.loop.create_future()
        self._patch_queries.append((change_id, fut))
        return fut

    def next_random_seed(self) -> str:
        self._random_calls += 1
        return f"{self.seed}:{self._random_calls}"

    # -- what the host calls (through Job) ---------------------------------------------

    @property
    def position(self) -> int:
        """How many operations durable code has issued."""
        return self.engine.next_id

    # -- what verification asks after a replay-only run ------------------------------

    def code_ending(self) -> str | None:
        """How durable code ended, in words (``None`` while it still runs)."""
        root = self.root
        if root is None or not root.done():
            return None
        if root.cancelled():
            return "is cancelled"
        exc = root.exception()
        if exc is None:
            return "returns"
        return f"raises {type(exc).__qualname__}({str(exc)!r})"

    def code_failure(self) -> DuronError | None:
        """The Duron error that stopped durable code itself (a bug of today's code:
        an input that cannot be encoded, an API misused), if one did."""
        root = self.root
        if root is None or not root.done() or root.cancelled():
            return None
        exc = root.exception()
        if isinstance(exc, DuronError) and not isinstance(exc, EffectError):
            return exc
        return None

    # -- the job's end ---------------------------------------------------------------

    def _code_end(self) -> dict[str, Any]:
        """How durable code ended, as the end entry records it.

        Raises:
            DuronError: Durable code failed with one (a bug to fix, not the job's
                result: the run fails and the log stays resumable).
        """
        root = self.root
        assert root is not None
        if root.cancelled():
            cancelled = JobCancelledError(f"job {self.label} was cancelled")
            return error_info(cancelled).to_json()
        exc = root.exception()
        if exc is not None:
            if isinstance(exc, DuronError) and not isinstance(exc, EffectError):
                raise exc
            return error_info(exc).to_json()
        dfn = self.dfn
        data, _ = roundtrip(
            self.codec,
            root.result(),
            dfn.sig.return_annotation,
            what=f"result of durable function {dfn.name}",
            job=self.label,
        )
        return {"result": data}

    def _outcome_from(
        self, result: JSONValue, error: ErrorInfo | None, cause: BaseException | None
    ) -> JobOutcome:
        position = self.engine.next_id
        if error is not None:
            return JobOutcome(
                error=rebuild(error, cause), recorded_error=error, position=position
            )
        dfn = self.dfn
        value = decode_recorded(
            self.codec,
            result,
            dfn.sig.return_annotation,
            what=f"result of durable function {dfn.name}",
            job=self.label,
        )
        return JobOutcome(result=value, position=position)

    def _name_at(self, position: int) -> str | None:
        op = self.engine.pending.get(position)
        return op.name if op is not None else None

    def _same_inputs(self, op: Op, recorded: dict[str, JSONValue] | None) -> bool:
        """Whether an effect's recorded inputs mean today's call under today's types.

        Inputs are compared as encoded; when they differ, the recorded ones are
        validated through the effect's current annotations and encoded again: a
        model that gained a field with a default then matches a log written before
        the field existed. Anything that no longer validates, or encodes to
        something else, is a divergence.
        """
        spec = op.spec
        if spec is None or recorded is None or op.inputs is None:
            return False
        try:
            again = spec.sig.reencode_inputs(self.codec, recorded)
        except Exception:
            return False
        return bool(again == op.inputs)
