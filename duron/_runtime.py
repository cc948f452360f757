"""The job driver: replays the log into the durable loop, then runs it live.

Replay: every recorded entry first advances the virtual clock to the entry's time
(firing the timers due by then, in order), then is matched by the replay core and
delivered. Live: effects run as anyio tasks; their outcomes queue up; the driver
takes all that are ready, appends them in one batch (group commit), and only then
delivers them, one at a time, each at the batch's time. Operations the code issues
are recorded by ``start`` entries when they are still running at the next write or
after a short idle period, or else inside their ``done`` entry.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from duron._codec import JSONValue, describe_type, explain
from duron._effect import EffectSpec
from duron._errors import (
    DuronError,
    EffectError,
    InternalError,
    NonDeterminismError,
    PayloadError,
    UsageError,
)
from duron._exceptions import error_info, rebuild
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
from duron._replay import Deliver, Emit, Finish, OpRecord, Replayer
from duron._stream import StreamWriter

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from duron._codec import Codec
    from duron._durable import DurableFn
    from duron._storage import LogStorage

__all__ = ["Outcome", "Runtime"]

START_FLUSH_DELAY = 0.05
"""Seconds an operation may run before its ``start`` entry is written on its own."""


@dataclass(slots=True)
class LiveOp:
    """Runtime state of one operation: its future in durable code, its live task."""

    rec: OpRecord
    fut: asyncio.Future[Any]
    spec: EffectSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    scope: anyio.CancelScope | None = None
    state: Any = None
    sink: StreamWriter[Any] | None = None


@dataclass(slots=True)
class Outcome:
    """How a job ended: a decoded result, or an exception to raise from ``wait()``."""

    result: Any = None
    error: BaseException | None = None
    recorded_error: ErrorInfo | None = None
    position: int = 0


_UNDECODED: Any = object()
"""Marks an outcome whose value durable code has not seen decoded yet."""


@dataclass(slots=True)
class _Done:
    op: LiveOp
    result: JSONValue = None
    error: ErrorInfo | None = None
    cause: BaseException | None = None
    decoded: Any = _UNDECODED


@dataclass(slots=True)
class _Emitted:
    op: LiveOp
    value: JSONValue
    decoded: Any = _UNDECODED


@dataclass(slots=True)
class _Fatal:
    error: BaseException


class _Refused(Exception):
    """Raised inside an effect's task: Duron refused its output; fail the job."""

    def __init__(self, error: DuronError) -> None:
        super().__init__(error)
        self.error = error


@dataclass(slots=True)
class _Pending:
    events: deque[_Done | _Emitted | _Fatal] = field(default_factory=deque)
    wake: anyio.Event | None = None


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
        self.replayer = Replayer(self.label, replaying=replaying)
        self.ops: dict[int, LiveOp] = {}
        self._to_launch: list[LiveOp] = []
        self._unflushed: list[LiveOp] = []
        self._pending = _Pending()
        self._tg: TaskGroup | None = None
        self._random_calls = 0
        self.root: asyncio.Task[Any] | None = None
        self.entries_written = 0
        self.entries_read = 0

    # -- called from durable code (through Context) -------------------------------

    def issue_effect(
        self,
        spec: EffectSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        sink: StreamWriter[Any] | None = None,
    ) -> asyncio.Future[Any]:
        if asyncio.events._get_running_loop() is not self.loop:
            raise UsageError(
                f"ctx.run({spec.name}) was called outside this job's durable code; "
                "a Context is only valid inside the durable function it was given to"
            )
        sig = spec.sig
        bound = sig.bind(args, kwargs)
        try:
            inputs = sig.encode_inputs(self.codec, bound)
        except PayloadError as err:
            raise PayloadError(
                what=err.what,
                type_name=err.type_name,
                detail=err.detail,
                position=self.replayer.next_id,
                job=self.label,
            ) from err.__cause__
        rec = self.replayer.issue("effect", spec.name, inputs)
        fut = self.loop.create_future()
        lop = LiveOp(rec, fut, spec, args, kwargs, sink=sink)
        if spec.kind == "stream":
            lop.state = args[0] if args else kwargs.get(sig.params[0].name)
        self.ops[rec.id] = lop
        if not self.replayer.replaying:
            self._to_launch.append(lop)
            self._unflushed.append(lop)
        fut.add_done_callback(functools.partial(self._op_settled, lop))
        return fut

    def _op_settled(self, lop: LiveOp, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() or self.replayer.replaying:
            return  # while replaying, a later entry may still name it: keep it
        # Durable code gave up on it: stop the live effect, record nothing more.
        self.ops.pop(lop.rec.id, None)
        self.replayer.forget(lop.rec.id)
        if lop.scope is not None:
            lop.scope.cancel()

    def next_random_seed(self) -> str:
        self._random_calls += 1
        return f"{self.seed}:{self._random_calls}"

    # -- driving ----------------------------------------------------------------

    async def run(
        self,
        tg: TaskGroup,
        main: Callable[[], Any],
        records: AsyncIterator[tuple[int, bytes]] | None,
    ) -> Outcome:
        """Replay ``records`` (the log after its job entry), then run live to the end."""
        self._tg = tg
        loop = self.loop
        ctx = contextvars.copy_context()
        self.root = loop.spawn(main(), ctx)
        loop.run_ready()
        finish: Finish | None = None
        if records is not None:
            label = self.label
            async for offset, raw in records:
                self.entries_read += 1
                entry = decode_entry(raw, job=label, offset=offset)
                if finish is not None:
                    raise NonDeterminismError(
                        job=label,
                        position=self.replayer.next_id,
                        recorded=f"an entry after the job's end ({entry.type})",
                        requested=None,
                        offset=offset,
                    )
                finish = self._replay(entry, offset)
        if finish is not None:
            return self._finished_from_log(finish)
        return await self._live()

    def _replay(self, entry: Entry, offset: int) -> Finish | None:
        loop = self.loop
        loop.advance(entry.t)
        action = self.replayer.feed(entry, offset)
        if action is None:
            return None
        if type(action) is Deliver:
            lop = self.ops.pop(action.op.id)
            self._deliver_done(lop, action.result, action.error, None)
            loop.run_ready()
            return None
        if type(action) is Emit:
            self._deliver_emit(self.ops[action.op.id], action.value)
            loop.run_ready()
            return None
        assert type(action) is Finish
        return action

    def _finished_from_log(self, finish: Finish) -> Outcome:
        root = self.root
        assert root is not None
        if not root.done():
            asking = [op.describe() for op in self.replayer.pending.values()]
            raise NonDeterminismError(
                job=self.label,
                position=self.replayer.next_id,
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
            raise NonDeterminismError(
                job=self.label,
                position=self.replayer.next_id,
                recorded=f"the job's end with {_show(recorded)}",
                requested=f"to end with {_show(mine)}",
            )
        return self._outcome_from(finish.result, finish.error, None)

    def _root_outcome_json(self) -> dict[str, Any]:
        root = self.root
        assert root is not None
        if root.cancelled():
            return error_info(
                asyncio.CancelledError("the durable function was cancelled")
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
        resumed = self.replayer.end_of_log() if self.replayer.replaying else []
        for rec in resumed:
            lop = self.ops[rec.id]
            if lop.fut.done():  # cancelled by durable code before the log ended
                self.replayer.forget(rec.id)
                del self.ops[rec.id]
                continue
            self._to_launch.append(lop)
            if not rec.start_logged:
                self._unflushed.append(lop)
        loop.advance(max(loop.time(), time.time()))
        pending = self._pending
        events = pending.events
        while not root.done():
            if self._to_launch:
                self._launch()
            if not events:
                await self._wait()
                if not events:
                    deadline = loop.next_deadline()
                    if deadline is not None and deadline <= time.time():
                        loop.advance(deadline)
                    continue
            t = max(loop.time(), time.time())
            batch = list(events)
            events.clear()
            entries: list[Entry] = self._take_starts(t, _finishing(batch))
            for ev in batch:
                if type(ev) is _Fatal:
                    raise ev.error
                if ev.op.fut.done():  # type: ignore[union-attr]
                    continue  # durable code stopped waiting for it: nothing to record
                entries.append(self._entry_for(ev, t))  # type: ignore[arg-type]
            if entries:
                await self._append(entries)
            for ev in batch:
                lop = ev.op  # type: ignore[union-attr]
                if lop.fut.done():
                    continue
                loop.advance(t)
                if type(ev) is _Done:
                    del self.ops[lop.rec.id]
                    self.replayer.forget(lop.rec.id)
                    self._deliver_done(lop, ev.result, ev.error, ev.cause, ev.decoded)
                else:
                    self._deliver_emit(lop, ev.value, ev.decoded)  # type: ignore[union-attr]
                loop.run_ready()
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
        if root.done() and not root.cancelled():
            cause = root.exception()
        return self._outcome_from(end.result, end.error, cause)

    def _take_starts(self, t: float, finishing: set[int] | None = None) -> list[Entry]:
        """``start`` entries for the ops still running (``finishing``: done in this batch)."""
        if not self._unflushed:
            return []
        out: list[Entry] = []
        for lop in self._unflushed:
            rec = lop.rec
            if finishing and rec.id in finishing:
                continue  # its ``done`` entry in this batch names it
            if rec.id in self.ops and not lop.fut.done():
                rec.start_logged = True
                out.append(
                    OpStarted(rec.id, self.loop.time(), rec.kind, rec.name, rec.inputs)
                )
        self._unflushed.clear()
        return out

    def _entry_for(self, ev: _Done | _Emitted, t: float) -> Entry:
        rec = ev.op.rec
        if type(ev) is _Emitted:
            return OpEmitted(rec.id, t, ev.value)
        assert type(ev) is _Done
        if rec.start_logged:
            return OpCompleted(rec.id, t, ev.result, ev.error)
        return OpCompleted(
            rec.id, t, ev.result, ev.error, rec.kind, rec.name, rec.inputs
        )

    async def _append(self, entries: list[Entry]) -> None:
        await self.storage.append([encode_entry(e) for e in entries])
        self.entries_written += len(entries)

    async def _wait(self) -> None:
        loop = self.loop
        pending = self._pending
        if self._unflushed:
            deadline = loop.next_deadline()
            delay = START_FLUSH_DELAY
            if deadline is not None:
                delay = min(delay, deadline - time.time())
            if delay > 0:
                pending.wake = anyio.Event()
                with anyio.move_on_after(delay):
                    await pending.wake.wait()
            if pending.events:
                return
            starts = self._take_starts(loop.time())
            if starts:
                await self._append(starts)
        deadline = loop.next_deadline()
        pending.wake = wake = anyio.Event()
        if pending.events:
            return
        if deadline is None:
            await wake.wait()
        else:
            delay = deadline - time.time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await wake.wait()

    def _push(self, ev: _Done | _Emitted | _Fatal) -> None:
        pending = self._pending
        pending.events.append(ev)
        if pending.wake is not None:
            pending.wake.set()

    def _launch(self) -> None:
        tg = self._tg
        assert tg is not None
        for lop in self._to_launch:
            tg.start_soon(self._run_op, lop, name=f"duron effect {lop.spec.name}")
        self._to_launch.clear()

    async def _run_op(self, lop: LiveOp) -> None:
        spec = lop.spec
        with anyio.CancelScope() as scope:
            lop.scope = scope
            if lop.fut.done():
                return
            try:
                if spec.kind == "async":
                    value = await spec.fn(*lop.args, **lop.kwargs)
                elif spec.kind == "sync":
                    value = await anyio.to_thread.run_sync(
                        functools.partial(spec.fn, *lop.args, **lop.kwargs)
                    )
                elif spec.kind == "stream":
                    value = await self._run_stream(lop)
                else:
                    value = spec.fn(*lop.args, **lop.kwargs)
                    if inspect.isawaitable(value):
                        value = await value
            except _Refused as refused:
                self._push(_Fatal(refused.error))
                return
            except Exception as exc:
                self._push(_Done(lop, None, error_info(exc), exc))
                return
            ann = spec.result_annotation
            try:
                data = self.codec.encode(value, ann)
                # Durable code gets the value as replay will rebuild it, and what
                # cannot be rebuilt never reaches the log.
                decoded = self.codec.decode(data, ann)
            except Exception as err:
                self._push(
                    _Fatal(
                        PayloadError(
                            what=f"result of effect {spec.name}",
                            type_name=describe_type(ann)
                            if ann is not None
                            else type(value).__qualname__,
                            detail=f"cannot encode {type(value).__qualname__}: {explain(err)}",
                            position=lop.rec.id,
                            job=self.label,
                        )
                    )
                )
                return
            self._push(_Done(lop, data, decoded=decoded))

    async def _run_stream(self, lop: LiveOp) -> Any:
        spec = lop.spec
        rest = lop.args[1:] if lop.args else ()
        kwargs = dict(lop.kwargs)
        first = spec.sig.params[0].name
        kwargs.pop(first, None)
        state = lop.state
        agen = spec.fn(state, *rest, **kwargs)
        try:
            action = await agen.__anext__()
            while True:
                try:
                    data = self.codec.encode(action, spec.action_annotation)
                    # Fold what replay will fold: the action as the log gives it back.
                    action = self.codec.decode(data, spec.action_annotation)
                except Exception as err:
                    refused = PayloadError(
                        what=f"value yielded by streaming effect {spec.name}",
                        type_name=describe_type(spec.action_annotation),
                        detail=f"cannot encode {type(action).__qualname__}: "
                        f"{explain(err)}",
                        position=lop.rec.id,
                        job=self.label,
                    )
                    refused.__cause__ = err
                    raise _Refused(refused) from err
                self._push(_Emitted(lop, data, action))
                state = spec.reducer(state, action)
                action = await agen.asend(state)
        except StopAsyncIteration:
            return state
        finally:
            await agen.aclose()

    # -- delivery into durable code ----------------------------------------------

    def _deliver_done(
        self,
        lop: LiveOp,
        result: JSONValue,
        error: ErrorInfo | None,
        cause: BaseException | None,
        decoded: Any = _UNDECODED,
    ) -> None:
        fut = lop.fut
        if lop.sink is not None:
            lop.sink._ch.close()
        if fut.done():
            return
        if error is not None:
            exc = rebuild(error)
            if cause is not None and exc is not cause:
                exc.__cause__ = cause
            fut.set_exception(exc)
            return
        if decoded is not _UNDECODED:
            fut.set_result(decoded)
            return
        spec = lop.spec
        ann = spec.result_annotation
        try:
            value = self.codec.decode(result, ann)
        except Exception as err:
            raise PayloadError(
                what=f"recorded result of {spec.name}",
                type_name=describe_type(ann),
                detail=f"no longer validates: {explain(err)}",
                position=lop.rec.id,
                job=self.label,
            ) from err
        fut.set_result(value)

    def _deliver_emit(
        self, lop: LiveOp, value: JSONValue, decoded: Any = _UNDECODED
    ) -> None:
        spec = lop.spec
        if spec.kind != "stream":
            raise InternalError(
                f"emission recorded for non-streaming operation {spec.name}"
            )
        action = decoded
        if action is _UNDECODED:
            try:
                action = self.codec.decode(value, spec.action_annotation)
            except Exception as err:
                raise PayloadError(
                    what=f"recorded value yielded by {spec.name}",
                    type_name=describe_type(spec.action_annotation),
                    detail=f"no longer validates: {explain(err)}",
                    position=lop.rec.id,
                    job=self.label,
                ) from err
        lop.state = spec.reducer(lop.state, action)
        if lop.sink is not None:
            lop.sink._ch.put(lop.state)


def _finishing(batch: list[_Done | _Emitted | _Fatal]) -> set[int] | None:
    """Ops whose ``done`` entry is in ``batch`` and who emitted nothing in it."""
    done: set[int] | None = None
    emitted: set[int] | None = None
    for ev in batch:
        if type(ev) is _Done:
            done = done or set()
            done.add(ev.op.rec.id)
        elif type(ev) is _Emitted:
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
