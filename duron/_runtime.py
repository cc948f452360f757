"""The job driver: replays the log into the durable loop, then runs it live.

Replay: every recorded entry first advances the virtual clock to the entry's time
(firing the timers due by then, in order), then is matched by the replay core and
delivered. Live: effects run as anyio tasks and host inputs arrive; their outcomes
queue up; the driver takes all that are ready, appends them in one batch (group
commit), and only then delivers them, one at a time, each at the batch's time.
Operations the code issues are recorded by ``start`` entries when they are still
running at the next write or after a short idle period, or else inside their
``done`` entry.

Both phases share one stepping discipline so that they cannot drift apart: the clock
moves one timer deadline at a time (:meth:`Runtime._advance`), every delivery is
followed by running the loop until nothing is ready, and ``ctx.patched`` questions
are answered only at those points (:meth:`Runtime._settle`).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from duron._codec import describe_type, explain
from duron._entries import JobCancelled
from duron._errors import (
    DuronError,
    EffectError,
    InternalError,
    NonDeterminismError,
    PayloadError,
    UsageError,
)
from duron._exceptions import error_info, rebuild
from duron._host import OutputChannel
from duron._hostloop import HostLoop, host_loop
from duron._log import (
    Entry,
    ErrorInfo,
    JobFinished,
    OpCompleted,
    OpEmitted,
    OpStarted,
    decode_entry,
    encode_entry,
)
from duron._loop import DurableLoop
from duron._ops import (
    UNDECODED,
    CancelRequest,
    Done,
    Emitted,
    Event,
    Fatal,
    LiveOp,
    OpFuture,
    Outcome,
    Recorded,
)
from duron._replay import Cancel, Deliver, Emit, Finish, OpRecord, Replayer
from duron._runner import run_effect
from duron._signal import Signal
from duron._stream import Stream, StreamWriter, _Channel

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from duron._codec import Codec
    from duron._durable import DurableFn
    from duron._effect import EffectSpec
    from duron._json import JSONValue
    from duron._storage import LogStorage

__all__ = ["Outcome", "Runtime"]

START_FLUSH_DELAY = 0.05
"""Seconds an operation may run before its ``start`` entry is written on its own."""

_now = time.time  # the host clock; a seam for tests


class Runtime:
    """One run of a durable function over one log (replay, then live)."""

    def __init__(
        self,
        dfn: DurableFn[..., Any],
        storage: LogStorage,
        *,
        seed: str,
        clock: float,
        replaying: bool,
    ) -> None:
        self.dfn = dfn
        self.storage = storage
        self.codec: Codec = dfn.codec
        self.label = storage.label
        self.seed = seed
        self.loop = DurableLoop(clock)  # type: ignore[abstract]
        self.replayer = Replayer(
            self.label, replaying=replaying, same_inputs=self._same_inputs
        )
        self.ops: dict[int, LiveOp] = {}
        self.inputs: dict[str, LiveOp] = {}
        self.outputs: dict[str, OutputChannel] = {}
        self.live = anyio.Event()
        self.ended = False
        self.closing = False  # the host is stopping the job: start no more effects
        self.root: asyncio.Task[Any] | None = None
        self.entries_written = 0
        self.entries_read = 0
        self._to_launch: list[LiveOp] = []
        self._unflushed: list[LiveOp] = []
        self._events: deque[Event] = deque()
        self._host: HostLoop | None = None
        self._flush_due = False
        self._random_calls = 0
        self._patch_queries: list[tuple[str, asyncio.Future[bool]]] = []
        self._records: AsyncIterator[tuple[int, bytes]] | None = None
        self._lookahead: deque[tuple[int, Entry]] = deque()
        self._current: Entry | None = None  # the entry whose time is being reached
        self.injected: dict[str, Any] = self._inject()

    # -- injected parameters ----------------------------------------------------------

    def _inject(self) -> dict[str, Any]:
        """Build the objects for ``= duron.Provided`` parameters, host inputs first."""
        out: dict[str, Any] = {}
        for inj in self.dfn.injections:
            if inj.kind == "writer":
                ch = OutputChannel(inj.name, inj.annotation, self.codec)
                self.outputs[inj.name] = ch
                out[inj.name] = StreamWriter(ch)  # type: ignore[arg-type]
                continue
            target: Any
            if inj.kind == "signal":
                target = out[inj.name] = Signal(inj.name)
            else:
                target = _Channel(inj.name)
                out[inj.name] = Stream(target)
            rec = self.replayer.issue("input", inj.name, None)
            lop = LiveOp(rec, self.loop.create_future(), annotation=inj.annotation)
            lop.target = target
            self.ops[rec.id] = lop
            self.inputs[inj.name] = lop
            if not self.replayer.replaying:
                self._unflushed.append(lop)
        return out

    # -- called from durable code (through Context) -------------------------------

    def _check_loop(self, what: str) -> None:
        if asyncio.events._get_running_loop() is not self.loop:
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
        """Register an effect call; returns the future to await, or, while
        replaying, its :class:`Recorded` outcome when it can be taken at once."""
        self._check_loop(f"ctx.run({spec.name})")
        sig = spec.sig
        try:
            inputs = sig.encode_call(self.codec, args, kwargs)
        except PayloadError as err:
            raise PayloadError(
                what=err.what,
                type_name=err.type_name,
                detail=err.detail,
                position=self.replayer.next_id,
                job=self.label,
            ) from err.__cause__
        replaying = self.replayer.replaying
        if (
            replaying
            and self._lookahead
            and not self.loop._ready
            and sink is None
            and spec.kind != "stream"
        ):
            recorded = self._replay_at_once(spec, inputs)
            if recorded is not None:
                return recorded
        rec = self.replayer.issue("effect", spec.name, inputs)
        fut = OpFuture(loop=self.loop, on_cancel=self._op_cancelled)
        fut._lop = lop = LiveOp(rec, fut, spec, args, kwargs, sink=sink)
        if spec.kind == "stream":
            lop.state = args[0] if args else kwargs.get(sig.params[0].name)
        self.ops[rec.id] = lop
        if not replaying:
            self._to_launch.append(lop)
            self._unflushed.append(lop)
        return fut

    def _replay_at_once(
        self, spec: EffectSpec, inputs: dict[str, JSONValue]
    ) -> Recorded | None:
        """The recorded outcome of the call about to be issued, if stepping would
        hand it over next.

        Normally the task suspends on the future, the loop goes quiet, and the
        driver delivers the next entry. When the loop has nothing else ready, no
        timer falls before that entry, and the next entries are exactly this
        call's ``start``/``done``, the task may just as well continue with the
        outcome, minus a future, a suspension, a loop step and the driver's round
        trip. Anything unusual (a mismatch, a payload that no longer decodes) is
        left to the driver, which reports it properly.
        """
        if self._current is not None or self._patch_queries:
            # Timers due before an entry are firing and that entry, already taken
            # from the lookahead, is not delivered yet: whatever comes next in the
            # log must wait for it.
            return None
        lookahead = self._lookahead
        entry = lookahead[0][1]
        position = self.replayer.next_id
        name = spec.name
        start: OpStarted | None = None
        if type(entry) is OpStarted:
            if entry.id != position or len(lookahead) < 2:
                return None
            start = entry
            entry = lookahead[1][1]
        if type(entry) is not OpCompleted or entry.id != position:
            return None
        loop = self.loop
        deadline = loop.next_deadline()
        if deadline is not None and deadline <= entry.t:
            return None
        error = entry.error
        if error is None:
            try:
                value = self.codec.decode(entry.result, spec.result_annotation)
            except Exception:
                return None  # the driver reports it with its position
            out = Recorded(value, None)
        else:
            out = Recorded(None, rebuild(error))
        if not self.replayer.take("effect", name, inputs, start, entry):
            return None
        if start is not None:
            lookahead.popleft()
        lookahead.popleft()
        loop.advance(entry.t)
        return out

    def issue_future(
        self, annotation: Any, name: str | None
    ) -> tuple[str, asyncio.Future[Any]]:
        self._check_loop("ctx.create_future")
        rec = self.replayer.issue("future", name or "future", None)
        fut = OpFuture(loop=self.loop, on_cancel=self._op_cancelled)
        fut._lop = lop = LiveOp(rec, fut, annotation=annotation)
        self.ops[rec.id] = lop
        if not self.replayer.replaying:
            self._unflushed.append(lop)
        return str(rec.id), fut

    def patch_query(self, change_id: str) -> asyncio.Future[bool]:
        self._check_loop(f"ctx.patched({change_id!r})")
        fut: asyncio.Future[bool] = self.loop.create_future()
        self._patch_queries.append((change_id, fut))
        return fut

    def _op_cancelled(self, lop: LiveOp) -> None:
        if self.replayer.replaying:
            return  # while replaying, a later entry may still name it: keep it
        # Durable code gave up on it: stop the live effect, record nothing more.
        lop.abandoned = True
        self.ops.pop(lop.rec.id, None)
        self.replayer.forget(lop.rec.id)
        if lop.scope is not None:
            lop.scope.cancel()

    def _same_inputs(
        self, rec: OpRecord, recorded: dict[str, JSONValue] | None
    ) -> bool:
        """Whether an effect's recorded inputs mean today's call under today's types.

        Inputs are compared as encoded; when they differ, the recorded ones are
        validated through the effect's current annotations and encoded again: a
        model that gained a field with a default then matches a log written before
        the field existed. Anything that no longer validates, or encodes to
        something else, is a divergence.
        """
        lop = self.ops.get(rec.id)
        if lop is None or lop.spec is None or recorded is None or rec.inputs is None:
            return False
        try:
            again = lop.spec.sig.reencode_inputs(self.codec, recorded)
        except Exception:
            return False
        return again == rec.inputs

    def next_random_seed(self) -> str:
        self._random_calls += 1
        return f"{self.seed}:{self._random_calls}"

    # -- called from the host (through Job) -----------------------------------------

    async def wait_live(self) -> None:
        """Return once replay is over and host input can be recorded."""
        await self.live.wait()
        if self.ended:
            raise UsageError(f"job {self.label} has ended; it takes no more input")

    async def submit_input(
        self, name: str, data: JSONValue, error: BaseException | None, close: bool
    ) -> None:
        await self.wait_live()
        lop = self.inputs[name]
        if lop.closed:
            raise UsageError(
                f"job {self.label}: {name!r} is closed; it takes no more values"
            )
        ev: Done | Emitted
        if close:
            lop.closed = True
            info = error_info(error) if error is not None else None
            ev = Done(lop, None, info, error, ack=anyio.Event())
        else:
            ev = Emitted(lop, data, ack=anyio.Event())
        await self._submit(ev, f"the value for {name!r}")

    async def recorded_count(self, name: str) -> int:
        """How many values the log holds for host input ``name`` (after replay)."""
        await self.live.wait()
        return int(self.inputs[name].state or 0)

    def find_future(self, future_id: str) -> LiveOp | None:
        try:
            lop = self.ops.get(int(future_id))
        except ValueError:
            return None
        if lop is None or lop.rec.kind != "future" or lop.fut.done() or lop.closed:
            return None
        return lop

    async def complete_future(
        self, future_id: str, result: Any, exception: BaseException | None
    ) -> None:
        await self.wait_live()
        lop = self.find_future(future_id)
        if lop is None:
            raise UsageError(
                f"job {self.label}: no pending future {future_id!r} (unknown, already "
                "completed, or no longer awaited); check job.is_future_pending first"
            )
        if exception is not None:
            ev = Done(lop, None, error_info(exception), exception, ack=anyio.Event())
        else:
            try:
                data = self.codec.encode(result, lop.annotation)
                decoded = self.codec.decode(data, lop.annotation)
            except Exception as err:
                raise PayloadError(
                    what=f"result for future {future_id!r} ({lop.rec.name})",
                    type_name=describe_type(lop.annotation),
                    detail=explain(err),
                    job=self.label,
                ) from err
            ev = Done(lop, data, decoded=decoded, ack=anyio.Event())
        lop.closed = True
        await self._submit(ev, f"the result of future {future_id!r}")

    async def cancel(self) -> None:
        await self.wait_live()
        await self._submit(CancelRequest(ack=anyio.Event()), "the cancellation")

    async def _submit(self, ev: Done | Emitted | CancelRequest, what: str) -> None:
        assert ev.ack is not None
        self._push(ev)
        await ev.ack.wait()
        if not ev.recorded:
            raise UsageError(f"job {self.label} ended before {what} was recorded")

    # -- driving ----------------------------------------------------------------

    async def run(
        self,
        tg: TaskGroup,
        main: Callable[[], Any],
        records: AsyncIterator[tuple[int, bytes]] | None,
        *,
        replay_only: bool = False,
    ) -> Outcome:
        """Replay ``records`` (the log after its job entry), then run live to the end.

        With ``replay_only`` (verification), stop where the log ends instead: no
        effect runs and nothing is written; the outcome then has ``finished=False``
        unless the log recorded the job's end.
        """
        self._host = host_loop(tg)
        self._records = records
        self.root = self.loop.spawn(main(), contextvars.copy_context())
        await self._settle()
        if records is not None:
            lookahead = self._lookahead
            while True:
                if not lookahead:
                    await self._fill_lookahead()
                    if not lookahead:
                        break
                offset, entry = lookahead.popleft()
                finish = await self._replay(entry, offset)
                if finish is not None:
                    extra = await self._next_entry()
                    if extra is not None:
                        self.replayer.feed(extra[1], extra[0])  # raises: after the end
                    return self._finished_from_log(finish)
        if replay_only:
            return Outcome(finished=False, position=self.replayer.next_id)
        return await self._live()

    def shutdown(self) -> None:
        """The run is over: wake host readers and writers still waiting on it."""
        self.ended = True
        self.live.set()
        for ch in self.outputs.values():
            ch.notify()
        for ev in self._events:
            if not isinstance(ev, Fatal) and ev.ack is not None:
                ev.ack.set()
        self._events.clear()
        self.loop.close()

    async def _fill_lookahead(self, size: int = 256) -> None:
        """Read up to ``size`` entries ahead, so that replay can take recorded
        outcomes synchronously (see :meth:`_replay_at_once`)."""
        lookahead = self._lookahead
        for _ in range(size):
            item = await self._read_entry()
            if item is None:
                return
            lookahead.append(item)

    async def _next_entry(self) -> tuple[int, Entry] | None:
        if self._lookahead:
            return self._lookahead.popleft()
        return await self._read_entry()

    async def _read_entry(self) -> tuple[int, Entry] | None:
        records = self._records
        if records is None:
            return None
        try:
            offset, raw = await records.__anext__()
        except StopAsyncIteration:
            self._records = None
            return None
        self.entries_read += 1
        return offset, decode_entry(raw, job=self.label, offset=offset)

    async def _replay(self, entry: Entry, offset: int) -> Finish | None:
        loop = self.loop
        t = entry.t
        deadline = loop.next_deadline()
        if deadline is not None and deadline <= t:
            # Timers due by this entry fire first; a ctx.patched they lead to is
            # answered by the log from this entry on. Until it is fed, this entry
            # (not the lookahead's first) is the next: no outcome may jump it.
            self._current = entry
            try:
                await self._advance(t)
            finally:
                self._current = None
        else:
            loop.advance(t)
        try:
            action = self.replayer.feed(entry, offset)
        except NonDeterminismError as err:
            earlier = await self._earlier_divergence(err.position)
            if earlier is not None:
                raise earlier from None
            raise
        if action is None:
            return None
        if type(action) is Deliver:
            self._deliver_done(self.ops.pop(action.op.id), action.result, action.error)
        elif type(action) is Emit:
            self._deliver_emit(self.ops[action.op.id], action.value)
        elif type(action) is Cancel:
            self._cancel_root()
        else:
            assert type(action) is Finish
            return action
        loop.run_ready()
        if self._patch_queries:
            await self._settle()
        return None

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
        loop = self.loop
        loop.run_ready()
        while self._patch_queries:
            queries, self._patch_queries = self._patch_queries, []
            for change_id, fut in queries:
                if fut.done():
                    continue
                if self.replayer.replaying:
                    taken = await self._recorded_patch(change_id)
                else:
                    taken = True
                if taken:
                    rec = self.replayer.issue("patch", change_id, None)
                    lop = LiveOp(rec, fut)
                    self.ops[rec.id] = lop
                    if not self.replayer.replaying:
                        self._push(Done(lop, True))
                fut.set_result(taken)
            loop.run_ready()

    async def _recorded_patch(self, change_id: str) -> bool:
        """While replaying: does the log take the patched path at the next position?

        Yes if the log's entry for that position is this patch's marker, or if the
        log ends before recording anything for it (the job goes live from there).
        No if it records another operation there, or the job's end.
        """
        position = self.replayer.next_id
        if self._current is not None:
            verdict = _patch_verdict(self._current, position, change_id)
            if verdict is not None:
                return verdict
        for _, entry in self._lookahead:
            verdict = _patch_verdict(entry, position, change_id)
            if verdict is not None:
                return verdict
        while (item := await self._read_entry()) is not None:
            self._lookahead.append(item)
            verdict = _patch_verdict(item[1], position, change_id)
            if verdict is not None:
                return verdict
        return True

    async def _earlier_divergence(self, position: int) -> NonDeterminismError | None:
        """The divergence at a position below ``position``, if the log shows one.

        The entries of one write are not in position order (``start`` entries of
        running operations come before the outcomes written with them), so an entry
        for an operation the code did not reach can come before the entry that shows
        where the code left the log's path, e.g. a removed ``ctx.patched``. That
        entry names both sides: report it instead.
        """
        unseen = [
            op
            for op in self.replayer.pending.values()
            if op.id < position and not op.start_logged and op.kind != "input"
        ]
        if not unseen:
            return None
        op = min(unseen, key=lambda o: o.id)
        found = next(
            (item for item in self._lookahead if getattr(item[1], "id", None) == op.id),
            None,
        )
        while found is None and (item := await self._read_entry()) is not None:
            self._lookahead.append(item)
            if getattr(item[1], "id", None) == op.id:
                found = item
        if found is None:
            return None
        offset, entry = found
        if not isinstance(entry, (OpStarted, OpCompleted)) or entry.name is None:
            return None
        assert entry.kind is not None
        recorded = OpRecord(entry.id, entry.kind, entry.name, entry.inputs)
        if (recorded.kind, recorded.name, recorded.inputs) == (
            op.kind,
            op.name,
            op.inputs,
        ):
            return None
        return NonDeterminismError(
            job=self.label,
            position=op.id,
            recorded=recorded.describe(),
            requested=op.describe(),
            offset=offset,
        )

    def _finished_from_log(self, finish: Finish) -> Outcome:
        root = self.root
        assert root is not None
        if not root.done():
            pending = self.replayer.pending
            asking = [op.describe() for op in pending.values() if op.kind != "input"]
            raise NonDeterminismError(
                job=self.label,
                position=min(pending) if pending else self.replayer.next_id,
                recorded="the job's end",
                requested=", ".join(asking) if asking else "to wait for something",
            )
        mine = self._root_outcome_json()
        recorded = (
            finish.error.to_json()
            if finish.error is not None
            else {"result": finish.result}
        )
        if _comparable(mine) != _comparable(recorded):
            was, now = _show_pair(recorded, mine)
            raise NonDeterminismError(
                job=self.label,
                position=self.replayer.next_id,
                recorded=f"the job's end with {was}",
                requested=f"to end with {now}",
            )
        return self._outcome_from(finish.result, finish.error, None)

    def _cancel_root(self) -> None:
        root = self.root
        if root is not None and not root.done():
            root.cancel("the job was cancelled")

    def _root_outcome_json(self) -> dict[str, Any]:
        root = self.root
        assert root is not None
        if root.cancelled():
            from duron._errors import JobCancelledError

            return error_info(
                JobCancelledError(f"job {self.label} was cancelled")
            ).to_json()
        exc = root.exception()
        if exc is not None:
            if isinstance(exc, DuronError) and not isinstance(exc, EffectError):
                # A Duron error (bad payload, misuse) is a bug to fix, not the job's
                # result: fail this run and leave the log resumable.
                raise exc
            return error_info(exc).to_json()
        ann = self.dfn.sig.return_annotation
        try:
            data = self.codec.encode(root.result(), ann)
            self.codec.decode(data, ann)  # an end replay could not decode: refuse it
        except Exception as err:
            raise PayloadError(
                what=f"result of durable function {self.dfn.name}",
                type_name=describe_type(ann),
                detail=f"cannot encode {type(root.result()).__qualname__}: {explain(err)}",
                job=self.label,
            ) from err
        return {"result": data}

    def _outcome_from(
        self, result: JSONValue, error: ErrorInfo | None, cause: BaseException | None
    ) -> Outcome:
        if error is not None:
            exc = rebuild(error)
            if cause is not None and exc is not cause:
                exc.__cause__ = cause
            return Outcome(
                error=exc, recorded_error=error, position=self.replayer.next_id
            )
        ann = self.dfn.sig.return_annotation
        try:
            value = self.codec.decode(result, ann)
        except Exception as err:
            raise PayloadError(
                what=f"recorded result of durable function {self.dfn.name}",
                type_name=describe_type(ann),
                detail=explain(err),
                job=self.label,
            ) from err
        return Outcome(result=value, position=self.replayer.next_id)

    # -- live ----------------------------------------------------------------------

    async def _live(self) -> Outcome:
        loop = self.loop
        root = self.root
        assert root is not None
        if self.replayer.replaying:
            self._resume_pending()
        self.live.set()
        await self._advance(max(loop.time(), _now()))
        host = self._host
        assert host is not None
        flusher = host.spawn(self._flusher, name=f"duron flusher {self.label}")
        try:
            await self._run_live(root)
        finally:
            flusher.cancel()
        for lop in self.ops.values():
            if lop.scope is not None:
                lop.scope.cancel()
        out = self._root_outcome_json()
        t = loop.time()
        end = JobFinished(
            t, out.get("result"), ErrorInfo.from_json(out) if "type" in out else None
        )
        entries = self._take_starts(t)
        entries.append(end)
        await self._append(entries)
        cause = None
        if not root.cancelled():
            cause = root.exception()
        return self._outcome_from(end.result, end.error, cause)

    async def _run_live(self, root: asyncio.Task[Any]) -> None:
        loop = self.loop
        host = self._host
        assert host is not None
        events = self._events
        steps = 0
        while not root.done():
            if self._to_launch:
                self._launch()
            if not events:
                await self._wait()
                if not events:
                    deadline = loop.next_deadline()
                    if deadline is not None and deadline <= _now():
                        loop.advance(deadline)
                        if self._patch_queries:
                            await self._settle()
                    continue
            await self._commit_and_deliver()
            steps += 1
            if steps % 64 == 0:  # effects that finish at once never make us wait
                await host.checkpoint()

    def _resume_pending(self) -> None:
        """The log ended: what was issued but not finished continues live."""
        for rec in self.replayer.end_of_log():
            lop = self.ops[rec.id]
            if rec.kind == "patch":
                self._push(Done(lop, True))  # taken at the log's end: record it now
                continue
            if lop.fut.cancelled():  # durable code stopped waiting before the log ended
                lop.abandoned = True
                self.replayer.forget(rec.id)
                del self.ops[rec.id]
                continue
            if rec.kind == "effect":
                self._to_launch.append(lop)
            if not rec.start_logged:
                self._unflushed.append(lop)

    async def _commit_and_deliver(self) -> None:
        """Append every ready event in one batch, then deliver them in order."""
        loop = self.loop
        t = max(loop.time(), _now())
        events = self._events
        if len(events) == 1:
            ev = events[0]
            if type(ev) is Done and ev.ack is None:
                unflushed = self._unflushed
                lop = ev.op
                if not unflushed or (len(unflushed) == 1 and unflushed[0] is lop):
                    # The common step: one operation finished, nothing else to
                    # record. Same as the general path below, minus its loops.
                    events.clear()
                    unflushed.clear()
                    if lop.abandoned:
                        return
                    await self._append([self._entry_for(ev, t)])
                    deadline = loop.next_deadline()
                    if deadline is not None and deadline <= t:
                        await self._advance(t)
                    else:
                        loop.advance(t)
                    # A timer due by now may have made durable code give up on it
                    # (a timeout), which already dropped it.
                    self.ops.pop(lop.rec.id, None)
                    self.replayer.forget(lop.rec.id)
                    if not lop.abandoned:
                        self._deliver_done(
                            lop, ev.result, ev.error, ev.cause, ev.decoded
                        )
                    loop.run_ready()
                    if self._patch_queries:
                        await self._settle()
                    return
        batch = list(self._events)
        self._events.clear()
        entries: list[Entry] = (
            self._take_starts(t, _finishing(batch)) if self._unflushed else []
        )
        for ev in batch:
            if type(ev) is Fatal:
                raise ev.error
            if type(ev) is CancelRequest:
                entries.append(JobCancelled(t))
            elif not ev.op.abandoned:  # type: ignore[union-attr]
                entries.append(self._entry_for(ev, t))  # type: ignore[arg-type]
        if entries:
            await self._append(entries)
        for ev in batch:
            if ev.ack is not None:  # type: ignore[union-attr]
                ev.recorded = True  # type: ignore[union-attr]
                ev.ack.set()  # type: ignore[union-attr]
        for ev in batch:
            deadline = loop.next_deadline()
            if deadline is not None and deadline <= t:
                await self._advance(t)
            else:
                loop.advance(t)
            if type(ev) is CancelRequest:
                self._cancel_root()
            else:
                lop = ev.op  # type: ignore[union-attr]
                if type(ev) is Done:
                    self.ops.pop(lop.rec.id, None)
                    self.replayer.forget(lop.rec.id)
                if lop.abandoned:
                    continue
                if type(ev) is Done:
                    self._deliver_done(lop, ev.result, ev.error, ev.cause, ev.decoded)
                else:
                    self._deliver_emit(lop, ev.value, ev.decoded)  # type: ignore[union-attr]
            loop.run_ready()
            if self._patch_queries:
                await self._settle()

    def _take_starts(self, t: float, finishing: set[int] | None = None) -> list[Entry]:
        """``start`` entries for the ops still running (``finishing``: done in this batch)."""
        if not self._unflushed:
            return []
        out: list[Entry] = []
        now = self.loop.time()
        for lop in self._unflushed:
            rec = lop.rec
            if finishing and rec.id in finishing:
                continue  # its ``done`` entry in this batch names it
            if rec.id in self.ops and not lop.abandoned and not rec.start_logged:
                rec.start_logged = True
                out.append(OpStarted(rec.id, now, rec.kind, rec.name, rec.inputs))
        self._unflushed.clear()
        return out

    def _entry_for(self, ev: Done | Emitted, t: float) -> Entry:
        rec = ev.op.rec
        if type(ev) is Emitted:
            return OpEmitted(rec.id, t, ev.value)
        assert type(ev) is Done
        if rec.start_logged:
            return OpCompleted(rec.id, t, ev.result, ev.error)
        return OpCompleted(
            rec.id, t, ev.result, ev.error, rec.kind, rec.name, rec.inputs
        )

    async def _append(self, entries: list[Entry]) -> None:
        try:
            data = [encode_entry(e) for e in entries]
        except TypeError:  # orjson refuses what JSON cannot hold: ints past 64 bits
            raise self._unwritable(entries) from None
        await self.storage.append(data)
        self.entries_written += len(entries)

    def _unwritable(self, entries: list[Entry]) -> DuronError:
        """Name the payload in ``entries`` that cannot be written to the log."""
        for entry in entries:
            try:
                encode_entry(entry)
            except TypeError as exc:
                op_id: int | None = getattr(entry, "id", None)
                lop = self.ops.get(op_id) if op_id is not None else None
                name = getattr(entry, "name", None) or (
                    lop.rec.name if lop is not None else f"operation #{op_id}"
                )
                if entry.type == "end":
                    what = f"result of durable function {self.dfn.name}"
                elif entry.type == "start":
                    what = f"inputs of {name}"
                elif entry.type == "emit":
                    what = f"value yielded by streaming effect {name}"
                elif getattr(entry, "error", None) is not None:
                    what = f"exception raised by effect {name}"
                else:
                    what = f"result of effect {name}"
                err = PayloadError(
                    what=what,
                    type_name=f"{entry.type} entry",
                    detail=f"cannot be written to the log: {exc}",
                    position=op_id,
                    job=self.label,
                )
                err.__cause__ = exc
                return err
        return InternalError(f"job {self.label}: a batch of entries failed to encode")

    async def _wait(self) -> None:
        """Sleep until an event arrives or the next timer is due."""
        loop = self.loop
        host = self._host
        assert host is not None
        if self._flush_due:
            await self._flush_starts()
            if self._events:
                return
        deadline = loop.next_deadline()
        delay = None if deadline is None else deadline - _now()
        if delay is None or delay > 0:
            await host.sleep(delay)
        if self._flush_due and not self._events:
            await self._flush_starts()

    async def _flush_starts(self) -> None:
        self._flush_due = False
        starts = self._take_starts(self.loop.time())
        if starts:
            await self._append(starts)

    async def _flusher(self) -> None:
        """Every so often, have an idle driver record what is still running."""
        host = self._host
        assert host is not None
        while True:
            await anyio.sleep(START_FLUSH_DELAY)
            if self._unflushed:
                self._flush_due = True
                host.wake()

    def _push(self, ev: Event) -> None:
        self._events.append(ev)
        if self._host is not None:
            self._host.wake()

    def _launch(self) -> None:
        host = self._host
        assert host is not None
        if self.closing:
            self._to_launch.clear()
            return
        codec, label, push = self.codec, self.label, self._push
        for lop in self._to_launch:
            assert lop.spec is not None
            lop.scope = host.spawn(
                run_effect,
                lop,
                codec,
                label,
                push,
                name=f"duron effect {lop.spec.name}",
            )
        self._to_launch.clear()

    async def aclose(self) -> None:
        """Cancel the effects still running and wait for them to stop."""
        if self._host is not None:
            await self._host.aclose()

    # -- delivery into durable code ----------------------------------------------

    def _deliver_done(
        self,
        lop: LiveOp,
        result: JSONValue,
        error: ErrorInfo | None,
        cause: BaseException | None = None,
        decoded: Any = UNDECODED,
    ) -> None:
        kind = lop.rec.kind
        if kind == "input":
            lop.closed = True
            if not lop.fut.done():
                lop.fut.set_result(None)
            if isinstance(lop.target, _Channel):
                lop.target.close(rebuild(error) if error is not None else None)
            return
        if kind == "patch":
            return
        if lop.sink is not None:
            lop.sink._ch.close()
        fut = lop.fut
        if fut.done():
            return
        if error is not None:
            exc = rebuild(error)
            if cause is not None and exc is not cause:
                exc.__cause__ = cause
            fut.set_exception(exc)
            return
        if decoded is UNDECODED:
            decoded = self._decode(
                lop, result, lop.annotation if kind == "future" else None
            )
        fut.set_result(decoded)

    def _deliver_emit(
        self, lop: LiveOp, value: JSONValue, decoded: Any = UNDECODED
    ) -> None:
        kind = lop.rec.kind
        if kind == "input":
            if decoded is UNDECODED:
                decoded = self._decode(lop, value, lop.annotation, "value sent to")
            lop.state = (lop.state or 0) + 1  # values recorded so far (recorded_count)
            if isinstance(lop.target, Signal):
                lop.target.trigger(decoded)
            else:
                lop.target.put(decoded)
            return
        spec = lop.spec
        if spec is None or spec.kind != "stream":
            raise InternalError(
                f"emission recorded for non-streaming operation {lop.rec.name}"
            )
        if decoded is UNDECODED:
            decoded = self._decode(
                lop, value, spec.action_annotation, "value yielded by"
            )
        lop.state = spec.reducer(lop.state, decoded)
        if lop.sink is not None:
            lop.sink._ch.put(lop.state)

    def _decode(
        self, lop: LiveOp, data: JSONValue, annotation: Any, what: str = "result of"
    ) -> Any:
        if annotation is None:
            assert lop.spec is not None
            annotation = lop.spec.result_annotation
        try:
            return self.codec.decode(data, annotation)
        except Exception as err:
            raise PayloadError(
                what=f"recorded {what} {lop.rec.name}",
                type_name=describe_type(annotation),
                detail=f"no longer validates: {explain(err)}",
                position=lop.rec.id,
                job=self.label,
            ) from err


def _patch_verdict(entry: Entry, position: int, change_id: str) -> bool | None:
    if isinstance(entry, JobFinished):
        return False
    if getattr(entry, "id", None) != position:
        return None
    return (
        isinstance(entry, OpCompleted)
        and entry.kind == "patch"
        and entry.name == change_id
    )


def _finishing(batch: list[Event]) -> set[int] | None:
    """Ops whose ``done`` entry is in ``batch`` and who emitted nothing in it."""
    done: set[int] | None = None
    emitted: set[int] | None = None
    for ev in batch:
        if type(ev) is Done:
            done = done or set()
            done.add(ev.op.rec.id)
        elif type(ev) is Emitted:
            emitted = emitted or set()
            emitted.add(ev.op.rec.id)
    if done and emitted:
        done -= emitted
    return done


def _comparable(d: dict[str, Any]) -> Any:
    if "type" in d:  # an error: compare type and message, not args
        return ("error", d["type"], d["message"])
    return ("result", d["result"])


def _show(d: dict[str, Any]) -> str:
    if "type" in d:
        return f"error {d['type']}({d['message']!r})"
    text = repr(d["result"])
    return f"result {text if len(text) <= 80 else text[:77] + '...'}"


def _show_pair(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str]:
    """Two differing outcomes for one message: long results are cut at the same
    place, just before their first difference, so that the difference shows."""
    if "type" in a or "type" in b:
        return _show(a), _show(b)
    ta, tb = repr(a["result"]), repr(b["result"])
    if len(ta) <= 80 and len(tb) <= 80:
        return f"result {ta}", f"result {tb}"
    same = next(
        (i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y),
        min(len(ta), len(tb)),
    )
    start = max(0, same - 30)
    return f"result {_window(ta, start)}", f"result {_window(tb, start)}"


def _window(text: str, start: int, width: int = 74) -> str:
    end = start + width
    return (
        ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
    )
