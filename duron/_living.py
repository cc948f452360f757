"""The live phase: effects run, host input arrives, outcomes are committed in batches.

Effects run as tasks of the host loop and host inputs arrive; their outcomes queue
up; the driver takes all that are ready, appends them in one batch (group commit),
and only then delivers them, one at a time, each at the batch's time. Operations
the code issues are recorded by ``start`` entries when they are still running at
the next write or after a short idle period, or else inside their ``done`` entry.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

import anyio

from duron._driver import DriverBase
from duron._entries import JobCancelled
from duron._exceptions import error_info, rebuild
from duron._log import (
    Entry,
    ErrorInfo,
    JobFinished,
    OpCompleted,
    OpEmitted,
    OpStarted,
)
from duron._ops import (
    CancelRequest,
    Done,
    Emitted,
    Event,
    Fatal,
    LiveOp,
    OpFuture,
    Outcome,
    Recorded,
    op_future,
)
from duron._runner import result_event, run_effect

if TYPE_CHECKING:
    from duron._effect import EffectSpec
    from duron._json import JSONValue


__all__ = ["CHECKPOINT_EVERY", "START_FLUSH_DELAY", "LivePhase"]

START_FLUSH_DELAY = 0.05
"""Seconds an operation may run before its ``start`` entry is written on its own."""

CHECKPOINT_EVERY = 64
"""Steps (effects finished at once included) between two yields to the host loop."""

_now = time.time  # the host clock; a seam for tests


class LivePhase(DriverBase):
    """Running durable code live (see the module docstring)."""

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
        self._stop_effects()
        out = self._root_outcome_json()
        t = loop.time()
        end = JobFinished(
            t, out.get("result"), ErrorInfo.from_json(out) if "type" in out else None
        )
        entries = self._take_starts()
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
            self._unyielded += 1
            if self._unyielded >= CHECKPOINT_EVERY:
                # Effects that finish at once never make us wait: let the host's
                # other tasks run now and then.
                self._unyielded = 0
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
                    if not loop.advance_quietly(t):
                        await self._advance(t)
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
            self._take_starts(_finishing(batch)) if self._unflushed else []
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
            if not loop.advance_quietly(t):
                await self._advance(t)
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

    def _run_at_once(
        self,
        spec: EffectSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: dict[str, JSONValue],
    ) -> Recorded | OpFuture:
        """Start a live effect from inside durable code; hand its result over at
        once if it finishes without waiting.

        The caller checked that nothing else is ready, due or unrecorded, so the
        driver's next step would be exactly this: commit the effect's ``done``
        entry alone, advance the clock, deliver. Doing it here spares the future,
        the suspension and the driver's round trip. An effect that waits, or an
        outcome that cannot be committed without waiting, continues as usual.
        """
        rec = self.replayer.issue("effect", spec.name, inputs)
        lop = LiveOp(rec, None, spec, args, kwargs)  # type: ignore[arg-type]
        ev = self._start_task(lop, inline=True)
        if type(ev) is Done and self._commit_at_once(lop, ev):
            self.replayer.forget(rec.id)
            if ev.error is not None:
                return Recorded(None, rebuild(ev.error, ev.cause))
            return Recorded(ev.decoded, None)
        if ev is not None:
            self._push(ev)
        return self._await_driver(lop)

    def _start_task(self, lop: LiveOp, *, inline: bool = False) -> Done | Fatal | None:
        """Start an ``async def`` effect as its own task on an asyncio host.

        Returns its outcome when it finished in its first step; otherwise its
        done-callback pushes the outcome when it comes. ``inline``: called from
        durable code rather than from the driver.
        """
        host = self._asyncio
        spec = lop.spec
        assert host is not None
        assert spec is not None
        try:
            task = host.start_effect(
                spec.fn,
                lop.args,
                lop.kwargs,
                f"duron effect {spec.name}",
                from_durable=inline,
            )
        except Exception as exc:  # calling it failed: that is its outcome
            return Done(lop, None, error_info(exc), exc)
        if task.done():
            return self._effect_event(lop, task)
        lop.scope = task
        task.add_done_callback(functools.partial(self._effect_finished, lop))
        return None

    def _await_driver(self, lop: LiveOp) -> OpFuture:
        """Register ``lop`` as a running operation whose outcome the driver delivers."""
        fut = op_future(self.loop, lop, self._op_cancelled)
        self.ops[lop.rec.id] = lop
        self._unflushed.append(lop)
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

    def _commit_at_once(self, lop: LiveOp, ev: Done) -> bool:
        """Commit ``ev`` alone, now, if that is what the driver's next step would
        do; False (nothing done) if a timer is due first or the storage would wait."""
        loop = self.loop
        t = max(loop.time(), _now())
        if loop.due_by(t):
            return False
        rec = lop.rec
        done = OpCompleted(
            rec.id, t, ev.result, ev.error, "effect", rec.name, rec.inputs
        )
        try:
            if not self._append_now([done]):
                return False
        except Exception as exc:  # the driver fails the job with it
            self._push(Fatal(exc))
            return False
        self._unyielded += 1
        loop.advance(t)  # only moves the clock: no timer is due by t (checked above)
        return True

    def _effect_finished(self, lop: LiveOp, task: asyncio.Task[Any]) -> None:
        """Done-callback of an effect task that had to wait: report its outcome."""
        ev = self._effect_event(lop, task)
        if ev is not None:
            self._push(ev)

    def _effect_event(
        self, lop: LiveOp, task: asyncio.Task[Any]
    ) -> Done | Fatal | None:
        """What a finished effect task amounts to (None: the job stopped it)."""
        if task.cancelled():
            if lop.abandoned or self._effects_stopped:
                return None
            # Only the job cancels these tasks: this effect raised CancelledError
            # itself. That is its outcome (durable code gets it as an EffectError
            # naming CancelledError, live and replayed), not a reason to wait forever.
            try:
                task.result()
            except asyncio.CancelledError as cancelled:
                return Done(lop, None, error_info(cancelled), cancelled)
        exc = task.exception()
        if exc is None:
            return result_event(lop, task.result(), self.codec, self.label)
        if not isinstance(exc, Exception):
            return None  # KeyboardInterrupt and the like: the task raised it already
        return Done(lop, None, error_info(exc), exc)

    def _take_starts(self, finishing: set[int] | None = None) -> list[Entry]:
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
        starts = self._take_starts()
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

    def _launch(self) -> None:
        host = self._host
        assert host is not None
        if self.closing:
            self._to_launch.clear()
            return
        codec, label, push = self.codec, self.label, self._push
        direct = self._asyncio is not None
        for lop in self._to_launch:
            assert lop.spec is not None
            if direct and lop.spec.kind == "async":
                if lop.abandoned:
                    continue
                ev = self._start_task(lop)
                if ev is not None:
                    push(ev)
                continue
            lop.scope = host.spawn(
                run_effect,
                lop,
                codec,
                label,
                push,
                name=f"duron effect {lop.spec.name}",
            )
        self._to_launch.clear()

    def _stop_effects(self) -> None:
        """The job is ending: cancel the effects still running, record nothing more."""
        self._effects_stopped = True
        for lop in self.ops.values():
            if lop.scope is not None:
                lop.scope.cancel()

    async def aclose(self) -> None:
        """Cancel the effects still running and wait for them to stop."""
        self._effects_stopped = True
        if self._host is not None:
            await self._host.aclose()


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
