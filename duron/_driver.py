"""The driver: one run of a durable function over one log, replayed then live.

It pumps three things and owns none of their rules: the engine
(:mod:`duron._engine`: what was recorded, what to write), the durable loop
(:mod:`duron._durable_loop`: where durable code runs, on a virtual clock) and the
storage (:class:`~duron.LogStorage`, through :mod:`duron._log_writer`). Effects run
on the host through :mod:`duron._effect_runner`; outcomes reach durable code
through :mod:`duron._delivery`; what durable code asks for comes in through
:mod:`duron._durable_calls`, what the host sends through :mod:`duron._host_input`.

Replay: read entries into the engine, ask it what comes next, fire the timers it
says fall first, deliver what it hands back, run the loop until nothing is ready,
answer ``ctx.patched`` questions; until the log ends.

Live: effects run on the host and report their outcomes into a queue; each round
takes every outcome that is ready, writes them in one append (the engine composes
it), and only then delivers them, one at a time, each at the write's time. Two
shortcuts spare the queue, and are leaves of this same path (the engine composes
what they write): a replayed call whose recorded end is next in the log gets it
at once, and a live ``async def`` effect that finishes in its first step on a
quiet job is committed from inside ``ctx.run`` (both in
:mod:`duron._durable_calls`).
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from duron._delivery import deliver_done, deliver_emit, inject
from duron._durable_calls import DurableCalls
from duron._durable_loop import DurableLoop
from duron._effect_runner import Effects, Fatal, ObservedEffects
from duron._engine import Engine
from duron._errors import (
    NonDeterminismError,
)
from duron._guard import loop_class
from duron._host_backends import host_for
from duron._host_input import HostInput
from duron._identity import JobIdentity
from duron._inbox_feed import InboxFeed, inbox_source
from duron._job_deadline import DEADLINE_PASSED, JobDeadline
from duron._job_end import JobOutcome, code_continued, code_end, outcome_from
from duron._log import decode_entry
from duron._log_writer import LogWriter
from duron._observe import RunStart
from duron._observe import current as current_observer
from duron._operations import (
    LOG_ENDED,
    NEED_ENTRIES,
    Attempted,
    Cancelled,
    Done,
    Emitted,
    Ended,
    FireTimer,
    Op,
    Outcome,
    Output,
)
from duron._storage import lease_of

if TYPE_CHECKING:
    import asyncio

    from anyio.abc import TaskGroup

    from duron._codec import Codec
    from duron._durable import DurableFn
    from duron._durable_loop import DurableLoop
    from duron._entries import Entry, ErrorInfo
    from duron._host_backends import Host
    from duron._host_streams import OutputChannel
    from duron._json import JSONValue
    from duron._observe import RunObserver
    from duron._storage import LogStorage

__all__ = ["CHECKPOINT_EVERY", "START_FLUSH_DELAY", "Driver", "Waiting"]

START_FLUSH_DELAY = 0.05
"""Seconds an operation may run before its ``start`` entry is written on its own."""


CHECKPOINT_EVERY = 64
"""Rounds (effects committed from ``ctx.run`` included) between two yields to the
host loop."""

READ_AHEAD = 256
"""Entries read from storage at a time while replaying."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A live job waiting only on durable things (see :meth:`Driver.waiting`).

    Attributes:
        until: When its next durable timer is due (the job clock: seconds since
            the epoch), or ``None`` if it waits for input alone.
        since: Since when it has been waiting so (``anyio.current_time()``).
    """

    until: float | None
    since: float


class Driver:
    """One run of a durable function over one log (see the module docstring).

    ``Driver.shortcuts = False`` turns both shortcuts off (every call takes the
    general path); the test suite checks that logs and results are the same.

    Args:
        dfn: The durable function.
        storage: Its log.
        seed: The job's random seed (from its job entry).
        started: The job clock at its job entry.
        replaying: Whether the log already holds the job (its entries are read
            and replayed first; a log of its job entry alone goes live at once).
        clock: The host clock (seconds since the epoch) live entries are stamped
            with; replay takes time from the log instead.
        context: What travels with the job (its job entry's ``context``), for an
            installed observer (:mod:`duron._observe`).
        deadline: When the job is cancelled if it has not ended (host clock;
            from its job entry).
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
        context: dict[str, JSONValue] | None = None,
        deadline: float | None = None,
        run: int = 0,
    ) -> None:
        self.dfn = dfn
        self.run_number = run  # which run of a job that continues as new (0: the first)
        self.job_deadline = deadline  # the job's, carried to its next run
        self.storage = storage
        self.codec: Codec = dfn.codec
        self.label: str = storage.label
        self.seed = seed
        self.clock = clock
        self.started = started
        self.context = context
        self.deadline: JobDeadline = JobDeadline(deadline)
        self._cancelled_why = ""  # what cancelled the job, for its end's message
        # Told about the live work of an observed run (None: not observed).
        self.observe: RunObserver | None = None
        self._end_status = "stopped"  # how the run ended, for the observer
        self._replay_only = False
        # The determinism guard's loop while duron.testing.determinism_guard() is on.
        self.loop: DurableLoop = loop_class()(started)
        self.engine: Engine = Engine(
            self.label, replaying=replaying, same_inputs=self._same_inputs
        )
        # Set once replay is over: host input may be recorded from then on.
        self.live: anyio.Event = anyio.Event()
        self.ended: bool = False
        # The host is stopping the job: start no more effects.
        self.closing: bool = False
        self.root: asyncio.Task[Any] | None = None
        self.entries_read: int = 0
        self.writer: LogWriter = LogWriter(storage, dfn.name, self.engine.pending.get)
        self._lease = lease_of(storage)
        self.outputs: dict[str, OutputChannel] = {}
        # A storage that keeps output (a job store's log) records what durable
        # code sends on StreamWriter parameters, for readers in other processes.
        self.keeps_output: bool = bool(getattr(storage, "keeps_output", False))
        self._outputs_live = False
        self.inputs: dict[str, Op] = {}
        self.injected: dict[str, Any] = inject(self)
        self.host_input: HostInput = HostInput(self)
        self.calls: DurableCalls = DurableCalls(self)
        self._events: deque[Outcome | Fatal] = deque()
        self._to_launch: list[Op] = []
        self._host: Host | None = None
        self._effects: Effects | None = None
        self._records: AsyncIterator[tuple[int, bytes]] | None = None
        self._patch_queries: list[tuple[str, asyncio.Future[bool]]] = []
        self._unyielded = 0
        self._undelivered = 0  # outcomes of the batch being delivered still to go
        self._rounds = False  # the live rounds have begun (the clock is the host's)
        # When the start entries of running effects are due to be written, if
        # any are waiting (anyio's clock): only then does an idle driver wake.
        self._flush_at: float | None = None
        # Since when (anyio's clock) the live rounds found nothing to do: no
        # outcome to write, no effect to launch, no durable code ready.
        self._quiet_since: float | None = None
        self._quiet: anyio.Event | None = None  # set when the driver goes quiet
        self._taking_input = False  # its inbox feed is fetching or delivering

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
        self._replay_only = replay_only
        self._records = records
        if records is not None:
            # Read before durable code starts, so that its first call can take
            # a recorded end at once; a log of its job entry alone is live at once.
            await self._read_ahead()
            if self.engine.exhausted and not replay_only:
                self.engine.go_live()
                records = None
        observer = None if replay_only else current_observer()
        if observer is not None:
            self.observe = observer.run_started(
                RunStart(
                    self.label,
                    self.dfn.name,
                    self.seed,
                    self.started,
                    self.context,
                    records is not None,
                )
            )
        observe = self.observe
        identity = JobIdentity(self.label, self.seed)
        if observe is None:
            self._effects = Effects(
                host, self.codec, self.label, self.push, identity, self.clock
            )
        else:
            self._effects = ObservedEffects(
                host, self.codec, self.label, self.push, identity, self.clock, observe
            )
            self.writer.on_written = observe.written
        self._effects.lease = self._lease
        context = contextvars.copy_context()
        if observe is not None:
            context.run(observe.enter_durable)
        self.root = self.loop.spawn(main(), context)
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
                case Done() | Emitted() | Attempted() | Cancelled():
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
        watch = self.writer.watch  # counts the log's bytes when a warning size is set
        batch: list[tuple[int, Entry]] = []
        try:
            for _ in range(READ_AHEAD):
                offset, raw = await records.__anext__()
                batch.append((offset, decode_entry(raw, job=label, offset=offset)))
                if watch is not None:
                    watch.add(len(raw))
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
        engine.check_end(
            ended,
            code_end(root, self.dfn, self.label, self._cancelled_why)
            if root.done()
            else None,
            code_continued(root),
        )
        self._end_status = "replayed"
        if self.observe is not None:
            self.observe.replay_done(self.calls.replayed)
        if ended.next is not None:
            return JobOutcome(position=engine.next_id, continued=ended.next)
        return self._outcome(ended.result, ended.error, None)

    async def _live(self) -> JobOutcome:
        loop, root, host = self.loop, self.root, self._host
        assert root is not None
        assert host is not None
        resumed = self._resume_pending() if self.engine.replaying else 0
        observe = self.observe
        if observe is not None:
            observe.replay_done(self.calls.replayed - resumed)
            loop.on_timer = observe.timer_fired
        if self.keeps_output:
            self._stage_outputs()
        self.live.set()
        await self._advance(max(loop.time(), self.clock()))
        self._rounds = True
        if not root.done() and self._deadline_passed():
            # Cancelled before anything else runs: what the log left running is
            # not started again.
            await self._commit()
        source = inbox_source(self.storage)
        feed = None
        if source is not None:  # input sent through a job store, by job id
            feed = host.spawn(
                InboxFeed(self, source).run, name=f"duron inbox {self.label}"
            )
        try:
            await self._run_live(root)
        finally:
            if feed is not None:
                feed.cancel()
        self.stop_effects()
        result, error = code_end(root, self.dfn, self.label, self._cancelled_why)
        t = loop.time()
        following = code_continued(root)
        if following is not None:
            await self.writer.continue_log(
                self.engine.end(None, None, t, t, following),
                following,
                sorted(self.engine.inbox_recorded),
            )
            self._end_status = "continued"
            return JobOutcome(position=self.engine.next_id, continued=following)
        await self.writer.append(self.engine.end(result, error, t, t))
        self._end_status = (
            "completed"
            if error is None
            else "cancelled"
            if root.cancelled()
            else "failed"
        )
        cause = None if root.cancelled() else root.exception()
        return self._outcome(result, error, cause)

    def record_output(self, output: Output) -> None:
        """Durable code sent (or closed) an output stream: record it with the next
        write; while replaying, :meth:`_stage_outputs` decides at the log's end."""
        if self._outputs_live:
            self.engine.stage_output(output)

    def _stage_outputs(self) -> None:
        """The log ended: stage what durable code sent that it does not record."""
        recorded = self.engine.outputs_recorded
        for name, ch in self.outputs.items():
            done = recorded.get(name, 0)
            for value in ch.values[done:]:
                data = self.codec.encode(value, ch.annotation)
                self.engine.stage_output(Output(name, data))
            if ch.closed and done <= len(ch.values):
                self.engine.stage_output(ch.close_record())
        self._outputs_live = True

    def _resume_pending(self) -> int:
        """The log ended: what was issued but not finished continues live; how
        many effects that is."""
        engine = self.engine
        resumed = 0
        for op in engine.go_live():
            if op.kind == "effect":
                resumed += 1
            if op.fut.cancelled():  # durable code stopped waiting meanwhile
                engine.abandon(op)
            elif op.kind == "effect":
                self._to_launch.append(op)
        return resumed

    async def _run_live(self, root: asyncio.Task[Any]) -> None:
        loop, host, events, engine = self.loop, self._host, self._events, self.engine
        assert host is not None
        while not root.done():
            if self._to_launch:
                lease = self._lease
                if lease is not None and not lease.lease_fresh():
                    # This process may have stalled past its lease: another
                    # worker may run the job now. Start nothing before knowing.
                    await lease.confirm_lease()
                self._launch()
            if not events and not engine.has_staged:
                if self._quiet_since is None and not loop.ready:
                    self._quiet_since = anyio.current_time()
                    self._tell_quiet()
                await self._wait()
                if not events and not engine.has_staged:
                    deadline = loop.next_deadline()
                    if deadline is not None and deadline <= self.clock():
                        loop.advance(deadline)
                        if self._patch_queries:
                            await self._settle()
                    continue
            self._quiet_since = None
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
            try:
                # A write under way is finished, not cut: stopping the job waits
                # for it, so that what it holds is known (and acknowledged).
                with anyio.CancelScope(shield=True):
                    await self.writer.append(entries)
            except BaseException:
                # A failed write may or may not be in the log (a storage keeps a
                # prefix of a failed batch). Host input waiting on it must not wait
                # forever, nor be told it was lost.
                for event in batch:
                    if event.ack is not None:
                        event.recorded = None
                        event.ack.set()
                raise
        engine.committed(batch)
        for event in batch:
            if event.ack is not None:
                event.recorded = True
                event.ack.set()
        # Until the last of the batch is delivered, durable code woken by an
        # earlier one (or by a timer due first) may not commit an effect of its
        # own at once: the general path would deliver the rest of the batch first.
        self._undelivered = len(batch)
        try:
            for event in batch:
                if not loop.advance_quietly(t):
                    await self._advance(t)
                self._deliver(event)
                self._undelivered -= 1
                loop.run_ready()
                if self._patch_queries:
                    await self._settle()
        finally:
            self._undelivered = 0

    async def _wait(self) -> None:
        """Sleep until an outcome arrives, the next timer is due, or it is time to
        record which effects are running (:data:`START_FLUSH_DELAY` after the
        first one that is not)."""
        host = self._host
        assert host is not None
        flush_at = self._flush_at
        if self.engine.has_unflushed:
            if flush_at is None:
                flush_at = self._flush_at = anyio.current_time() + START_FLUSH_DELAY
            elif anyio.current_time() >= flush_at:
                await self._flush_starts()
                if self._events:
                    return
                flush_at = None
        else:
            flush_at = self._flush_at = None
        if self._deadline_passed():
            return
        delay = self.deadline.delay(self.clock, self.loop.next_deadline())
        if flush_at is not None:
            until_flush = max(0.0, flush_at - anyio.current_time())
            delay = until_flush if delay is None else min(delay, until_flush)
        if delay is None or delay > 0:
            await host.sleep(delay)
        if self._deadline_passed():
            return
        if (
            flush_at is not None
            and not self._events
            and anyio.current_time() >= flush_at
        ):
            await self._flush_starts()

    def _deadline_passed(self) -> bool:
        """Queue the job's cancellation if its deadline passed (once)."""
        cancel = self.deadline.due(self.clock)
        if cancel is None:
            return False
        self.push(cancel)
        return True

    async def _flush_starts(self) -> None:
        self._flush_at = None
        starts = self.engine.flush_starts(self.loop.time())
        if starts:
            await self.writer.append(starts)
            if self._quiet_since is not None:
                self._tell_quiet()  # quiet, and now with nothing left to write

    def taking_input(self, busy: bool) -> None:
        """The inbox feed is fetching input (``True``), or has recorded all it
        found (``False``): until then the job is not waiting on input."""
        self._taking_input = busy
        if not busy and self._quiet_since is not None:
            self._tell_quiet()

    def _tell_quiet(self) -> None:
        """Wake :meth:`wait_quiet`: the driver may wait on durable things only."""
        quiet = self._quiet
        if quiet is not None:
            self._quiet = None
            quiet.set()

    def _launch(self) -> None:
        self._quiet_since = None
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
            Effects.stop(op)

    async def aclose(self) -> None:
        """Cancel the effects still running and wait for them to stop."""
        self.stop_effects()
        if self._host is not None:
            await self._host.aclose()

    def shutdown(self, failure: BaseException | None = None) -> None:
        """The run is over (``failure``: what stopped it, if it failed): wake host
        readers and writers still waiting on it."""
        observe, self.observe = self.observe, None
        if observe is not None:
            observe.run_ended(self._end_status, failure)
        self.ended = True
        self.live.set()
        if self._quiet is not None:
            self._quiet.set()
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
                if self.deadline.caused(event):
                    self._cancelled_why = DEADLINE_PASSED
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

    # -- what DurableCalls asks of the driver -----------------------------------

    def launch(self, op: Op) -> None:
        """Start ``op``'s effect live at the next round."""
        self._to_launch.append(op)

    def ask_patched(self, change_id: str, fut: asyncio.Future[bool]) -> None:
        """Answer ``ctx.patched(change_id)`` into ``fut`` when the loop settles."""
        self._patch_queries.append((change_id, fut))

    def quiet_for_replay(self) -> bool:
        """Whether a replayed call may take its recorded end at once: nothing else
        is ready to run and no ``ctx.patched`` question waits for its answer."""
        return not self._patch_queries and not self.loop.ready

    def quiet_for_live(self) -> bool:
        """Whether a live effect that ends in its first step may be committed from
        inside ``ctx.run``: the driver's next round would commit it alone. The
        rounds have begun (before them, the clock still has to be moved to the
        host's time, firing the timers due by then); nothing else is ready,
        queued, undelivered, unrecorded or asked; the storage can append without
        waiting; the host is asyncio."""
        effects = self._effects
        return (
            self._rounds
            and not self._events
            and not self._undelivered
            and not self._to_launch
            and not self._patch_queries
            and self._unyielded < CHECKPOINT_EVERY
            and not self.closing
            and effects is not None
            and effects.direct
            and self.writer.can_append_now
            and (self._lease is None or self._lease.lease_fresh())
            and self.engine.idle
            and not self.loop.ready
        )

    def start_from_durable(self, op: Op) -> Done | Fatal | None:
        """Start ``op``'s effect now, from durable code; its outcome if it ended
        in its first step."""
        effects = self._effects
        assert effects is not None
        return effects.start(op, from_durable=True)

    def commit_at_once(self, done: Done) -> bool:
        """Commit ``done`` alone, now, as the next round would (see
        :meth:`quiet_for_live`); False (nothing written) if a timer is due first
        or the storage would have to wait."""
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

    def replaying_recorded(self) -> bool:
        """Whether durable code runs what its log recorded (replay, before the code
        passes the log's last entry; all of a ``duron verify`` run)."""
        engine = self.engine
        return self._replay_only or (engine.replaying and not engine.exhausted)

    # -- what the host calls (through Job) ---------------------------------------------

    def waiting(self) -> Waiting | None:
        """What the job waits for, when it waits only on durable things.

        ``None`` while it replays, has an effect running, has something to write
        or durable code to run, or has ended. Otherwise: the job clock's next
        timer (``None``: it waits for input alone), and since when (anyio's clock)
        it has been this quiet.
        """
        since = self._quiet_since
        if (
            since is None
            or self.ended
            or self.closing
            or self._events
            or self._to_launch
            or self.loop.ready
            or self.engine.has_staged
            or self.engine.has_unflushed
            or self._taking_input
        ):
            return None
        for op in self.engine.pending.values():
            if op.kind == "effect" and not op.abandoned:
                return None
        until = self.loop.next_deadline()
        deadline = self.job_deadline  # the job is cancelled then: it must run
        if deadline is not None and (until is None or deadline < until):
            until = deadline
        return Waiting(until, since)

    async def wait_quiet(self) -> None:
        """Return when the live rounds next find nothing to do (or the run ends)."""
        if self.ended:
            return
        if self._quiet is None:
            self._quiet = anyio.Event()
        await self._quiet.wait()

    @property
    def position(self) -> int:
        """How many operations durable code has issued."""
        return self.engine.next_id

    def _outcome(
        self, result: JSONValue, error: ErrorInfo | None, cause: BaseException | None
    ) -> JobOutcome:
        return outcome_from(
            self.dfn, self.label, self.engine.next_id, result, error, cause
        )

    def _same_inputs(self, op: Op, recorded: dict[str, JSONValue] | None) -> bool:
        """Whether an effect's recorded inputs mean today's call (the engine asks
        when they differ as stored)."""
        spec = op.spec
        return spec is not None and spec.sig.same_call(self.codec, recorded, op.inputs)
