"""The job driver: replays the log into the durable loop, then runs it live.

:class:`Runtime` is one run of a durable function over one log. It joins the replay
phase (:mod:`duron._replaying`) and the live phase (:mod:`duron._living`), which
share their state and stepping discipline (:mod:`duron._driver`), and adds what
durable code calls (through :class:`~duron.Context`) and what the host calls
(through :class:`~duron.Job`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from duron._codec import describe_type, explain
from duron._errors import (
    PayloadError,
    UsageError,
)
from duron._exceptions import error_info
from duron._host import OutputChannel
from duron._hostloop import AsyncioHost, HostLoop, host_loop
from duron._living import CHECKPOINT_EVERY, LivePhase
from duron._loop import DurableLoop
from duron._ops import (
    CancelRequest,
    Done,
    Emitted,
    Event,
    Fatal,
    LiveOp,
    Outcome,
    Recorded,
    op_future,
)
from duron._replay import Replayer
from duron._replaying import ReplayPhase
from duron._signal import Signal
from duron._storage import nowait_appender
from duron._stream import Stream, StreamWriter, _Channel

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from duron._codec import Codec
    from duron._durable import DurableFn
    from duron._effect import EffectSpec
    from duron._json import JSONValue
    from duron._log import (
        Entry,
    )
    from duron._storage import LogStorage


_running_loop = asyncio.events._get_running_loop

__all__ = ["Outcome", "Runtime"]


class Runtime(ReplayPhase, LivePhase):
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
        self.label: str = storage.label
        self.seed = seed
        self.loop: DurableLoop = DurableLoop(clock)  # type: ignore[abstract]
        self.replayer: Replayer = Replayer(
            self.label, replaying=replaying, same_inputs=self._same_inputs
        )
        self.ops: dict[int, LiveOp] = {}
        self.inputs: dict[str, LiveOp] = {}
        self.outputs: dict[str, OutputChannel] = {}
        self.live: anyio.Event = anyio.Event()
        self.ended: bool = False
        self.closing = False  # the host is stopping the job: start no more effects
        self.root: asyncio.Task[Any] | None = None
        self.entries_written = 0
        self.entries_read = 0
        self._to_launch: list[LiveOp] = []
        self._unflushed: list[LiveOp] = []
        self._events: deque[Event] = deque()
        self._host: HostLoop | None = None
        self._asyncio: AsyncioHost | None = None  # the host, when it is asyncio
        self._append_nowait = nowait_appender(storage)
        self._unyielded = 0
        self._effects_stopped = False  # the job is ending: effects were cancelled
        self._flush_due = False
        self._random_calls = 0
        self._patch_queries: list[tuple[str, asyncio.Future[bool]]] = []
        self._records: AsyncIterator[tuple[int, bytes]] | None = None
        self._lookahead: deque[tuple[int, Entry]] = deque()
        self._current: Entry | None = None  # the entry whose time is being reached
        self.injected: dict[str, Any] = self._inject()

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
        if _running_loop() is not self.loop:
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
        if (
            not replaying
            and self._asyncio is not None
            and self._append_nowait is not None
            and sink is None
            and spec.kind == "async"
            and not self.loop._ready
            and not self._events
            and not self._to_launch
            and not self._unflushed
            and not self._patch_queries
            and self._unyielded < CHECKPOINT_EVERY
            and not self.closing
        ):
            return self._run_at_once(spec, args, kwargs, inputs)
        rec = self.replayer.issue("effect", spec.name, inputs)
        lop = LiveOp(rec, None, spec, args, kwargs, sink=sink)  # type: ignore[arg-type]
        fut = op_future(self.loop, lop, self._op_cancelled)
        if spec.kind == "stream":
            lop.state = args[0] if args else kwargs.get(sig.params[0].name)
        self.ops[rec.id] = lop
        if not replaying:
            self._to_launch.append(lop)
            self._unflushed.append(lop)
        return fut

    def issue_future(
        self, annotation: Any, name: str | None
    ) -> tuple[str, asyncio.Future[Any]]:
        self._check_loop("ctx.create_future")
        rec = self.replayer.issue("future", name or "future", None)
        lop = LiveOp(rec, None, annotation=annotation)  # type: ignore[arg-type]
        fut = op_future(self.loop, lop, self._op_cancelled)
        self.ops[rec.id] = lop
        if not self.replayer.replaying:
            self._unflushed.append(lop)
        return str(rec.id), fut

    def patch_query(self, change_id: str) -> asyncio.Future[bool]:
        self._check_loop(f"ctx.patched({change_id!r})")
        fut: asyncio.Future[bool] = self.loop.create_future()
        self._patch_queries.append((change_id, fut))
        return fut

    def next_random_seed(self) -> str:
        self._random_calls += 1
        return f"{self.seed}:{self._random_calls}"

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
        self._host = host = host_loop(tg)
        if isinstance(host, AsyncioHost):
            self._asyncio = host
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
