"""What both phases of the job driver share: its state and its stepping discipline.

Replay and live run durable code the same way, so that they cannot drift apart:
the clock moves one timer deadline at a time (:meth:`DriverBase._advance`), every
delivery is followed by running the loop until nothing is ready, and
``ctx.patched`` questions are answered only at those points
(:meth:`DriverBase._settle`). Delivery into durable code (results, emissions) and
the job's outcome live here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from duron._codec import describe_type, explain
from duron._errors import (
    DuronError,
    EffectError,
    InternalError,
    PayloadError,
)
from duron._exceptions import error_info, rebuild
from duron._log import (
    Entry,
    ErrorInfo,
    JobFinished,
    OpCompleted,
    decode_entry,
    encode_entry,
)
from duron._ops import (
    UNDECODED,
    Done,
    Event,
    LiveOp,
    Outcome,
)
from duron._signal import Signal
from duron._stream import _Channel

if TYPE_CHECKING:
    import asyncio
    from collections import deque

    import anyio

    from duron._codec import Codec
    from duron._durable import DurableFn
    from duron._host import OutputChannel
    from duron._hostloop import AsyncioHost, HostLoop
    from duron._json import JSONValue
    from duron._loop import DurableLoop
    from duron._replay import Replayer
    from duron._storage import LogStorage


__all__ = ["DriverBase"]

_V = TypeVar("_V")


class DriverBase:
    """State and steps shared by :class:`~duron._replaying.ReplayPhase` and
    :class:`~duron._living.LivePhase`; :class:`~duron._runtime.Runtime` joins them."""

    # The state every phase shares; Runtime.__init__ sets it.
    dfn: DurableFn[..., Any]
    storage: LogStorage
    codec: Codec
    label: str
    seed: str
    loop: DurableLoop
    replayer: Replayer
    ops: dict[int, LiveOp]
    inputs: dict[str, LiveOp]
    outputs: dict[str, OutputChannel]
    live: anyio.Event
    ended: bool
    closing: bool
    root: asyncio.Task[Any] | None
    entries_written: int
    entries_read: int
    _to_launch: list[LiveOp]
    _unflushed: list[LiveOp]
    _events: deque[Event]
    _host: HostLoop | None
    _asyncio: AsyncioHost | None
    _append_nowait: Callable[[Sequence[bytes]], bool] | None
    _unyielded: int
    _effects_stopped: bool
    _flush_due: bool
    _random_calls: int
    _patch_queries: list[tuple[str, asyncio.Future[bool]]]
    _records: AsyncIterator[tuple[int, bytes]] | None
    _lookahead: deque[tuple[int, Entry]]
    _current: Entry | None

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

        def verdict(entry: Entry) -> bool | None:
            return _patch_verdict(entry, position, change_id)

        if self._current is not None:
            answer = verdict(self._current)
            if answer is not None:
                return answer
        found = await self._scan_ahead(verdict)
        return True if found is None else found[2]

    async def _scan_ahead(
        self, verdict: Callable[[Entry], _V | None]
    ) -> tuple[int, Entry, _V] | None:
        """The first entry not yet fed for which ``verdict`` says something, with
        what it says; entries read to find it stay in the lookahead."""
        for offset, entry in self._lookahead:
            answer = verdict(entry)
            if answer is not None:
                return offset, entry, answer
        while (item := await self._read_entry()) is not None:
            self._lookahead.append(item)
            answer = verdict(item[1])
            if answer is not None:
                return item[0], item[1], answer
        return None

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
            return Outcome(
                error=rebuild(error, cause),
                recorded_error=error,
                position=self.replayer.next_id,
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

    def _encode(self, entries: list[Entry]) -> list[bytes]:
        try:
            return [encode_entry(e) for e in entries]
        except TypeError:  # orjson refuses what JSON cannot hold: ints past 64 bits
            raise self._unwritable(entries) from None

    async def _append(self, entries: list[Entry]) -> None:
        await self.storage.append(self._encode(entries))
        self.entries_written += len(entries)

    def _append_now(self, entries: list[Entry]) -> bool:
        """Append without waiting, if the storage can; False (nothing written) if not."""
        append_nowait = self._append_nowait
        if append_nowait is None:
            return False
        if not append_nowait(self._encode(entries)):
            self._append_nowait = None  # this storage never can (e.g. fsync mode)
            return False
        self.entries_written += len(entries)
        return True

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

    def _push(self, ev: Event) -> None:
        self._events.append(ev)
        if self._host is not None:
            self._host.wake()

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
            fut.set_exception(rebuild(error, cause))
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
