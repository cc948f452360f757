"""The engine: Duron's record-and-replay algorithm, with no I/O and no event loop.

Like a sans-IO protocol machine, it is fed what happened and answers what to do;
the driver (:mod:`duron._driver`) does the waiting, the reading and the writing.

In, from durable code (through the driver): the operations it asks for
(:meth:`Engine.issue`), numbered 0, 1, 2... in the order the deterministic loop
issues them, and ``ctx.patched`` questions (:meth:`Engine.patch_verdict`).

In, from the log: its entries after the job entry (:meth:`Engine.receive`), in log
order, and the news that there are no more (:meth:`Engine.receive_end`).

Out, while replaying: :meth:`Engine.next_event` says what comes next, given the
durable loop's next timer deadline: fire that timer first (:class:`FireTimer`,
when it falls due no later than the next entry), deliver a recorded outcome
(:class:`Done`, :class:`Emitted`), note a failed attempt of an effect that is
tried again (:class:`Attempted`: durable code is not told; the operation keeps it),
cancel the job (:class:`Cancelled`), the job's
recorded end (:class:`Ended`), read more entries (:data:`NEED_ENTRIES`) or go live
(:data:`LOG_ENDED`). An entry that does not match what the code asked for at its
position raises :class:`~duron.NonDeterminismError`; entries that contradict each
other raise :class:`~duron.CorruptLogError`.

Out, while live: the entries of one write (:meth:`Engine.commit`): the ``start``
entries of operations still running, then the outcomes of the batch, so that one
step of the job costs one append. :meth:`Engine.end` composes the last write.

The ordering rule that makes replay possible: a live driver writes an operation's
``start``/``done`` entry only after the code issued it, so when replay reads an entry
for position *k*, the code has already issued *k* (or never will: a divergence).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from duron._entries import (
    Entry,
    ErrorInfo,
    JobCancelled,
    JobFinished,
    JobStarted,
    OpAttempted,
    OpCompleted,
    OpEmitted,
    OpStarted,
    OutputSent,
)
from duron._errors import CorruptLogError, NonDeterminismError, OperationCall
from duron._json import JSONValue, show_pair
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

__all__ = ["Engine"]


class Engine:
    """Matches operations to the log, and composes what a live run writes.

    Args:
        job: The job's label, for errors.
        replaying: False for a new job (its log holds only the job entry).
        same_inputs: Asked, when an entry names the same operation as the code but
            its recorded inputs differ as stored, whether they still mean the same
            call (the driver reads them through today's annotations, so that a
            model field added with a default is no divergence). Without it, inputs
            must be equal.
    """

    __slots__ = (
        "_lookahead",
        "_more",
        "_pending",
        "_staged",
        "_unflushed",
        "finished",
        "inbox_recorded",
        "job",
        "next_id",
        "outputs_recorded",
        "replaying",
        "same_inputs",
    )

    def __init__(
        self,
        job: str,
        *,
        replaying: bool,
        same_inputs: Callable[[Op, dict[str, JSONValue] | None], bool] | None = None,
    ) -> None:
        self.job: str = job
        self.next_id: int = 0
        self.replaying: bool = replaying
        self.finished: bool = False  # the log's end entry was fed
        self.same_inputs: Callable[[Op, dict[str, JSONValue] | None], bool] | None = (
            same_inputs
        )
        self._pending: dict[int, Op] = {}
        self._lookahead: deque[tuple[int, Entry]] = deque()
        self._more: bool = replaying  # the log may hold entries not received yet
        self._unflushed: list[Op] = []  # issued live, no entry names them yet
        self._staged: list[Outcome] = []  # decided here, for the next write
        # The job store inbox items the log records (their ``seq``), read or written.
        self.inbox_recorded: set[int] = set()
        # How many ``out`` entries the log holds per output stream (a close counts).
        self.outputs_recorded: dict[str, int] = {}

    # -- operations the code asks for ------------------------------------------------

    @property
    def pending(self) -> dict[int, Op]:
        """Issued operations that have no recorded end yet, by position."""
        return self._pending

    @property
    def has_unflushed(self) -> bool:
        """Whether operations issued live have no entry naming them yet."""
        return bool(self._unflushed)

    @property
    def has_staged(self) -> bool:
        """Whether the engine has outcomes of its own for the next write (the
        markers of patches taken live)."""
        return bool(self._staged)

    @property
    def idle(self) -> bool:
        """Whether the next write would hold nothing but the outcomes given to it."""
        return not self._unflushed and not self._staged

    def issue(self, op: Op) -> Op:
        """Give ``op`` the next position; it is pending until its end is recorded."""
        op.id = position = self.next_id
        self.next_id = position + 1
        self._pending[position] = op
        if not self.replaying and op.kind != "patch":
            self._unflushed.append(op)
        return op

    def abandon(self, op: Op) -> bool:
        """Durable code stopped waiting for ``op``: record nothing more for it.

        Returns False (nothing changes) while replaying, where a later entry may
        still name the operation.
        """
        if self.replaying:
            return False
        op.abandoned = True
        self._pending.pop(op.id, None)
        return True

    # -- reading the log back ----------------------------------------------------------

    def receive(self, offset: int, entry: Entry) -> None:
        """The log's next entry (after the job entry); ``offset`` locates it."""
        self._lookahead.append((offset, entry))

    def receive_many(self, items: Iterable[tuple[int, Entry]]) -> None:
        """:meth:`receive` for several entries, in log order."""
        self._lookahead.extend(items)

    def receive_end(self) -> None:
        """The log holds no more entries."""
        self._more = False

    @property
    def exhausted(self) -> bool:
        """Whether every entry of the log was received and consumed."""
        return not self._lookahead and not self._more

    def next_event(
        self, deadline: float | None
    ) -> Done | Emitted | Attempted | Cancelled | Ended | FireTimer | Any:
        """What the replay does next, given the durable loop's next timer deadline.

        Returns :class:`FireTimer` when that timer falls due no later than the
        next entry (timers that fell before a logged event fire before it, every
        time); otherwise the next entry's delivery, :data:`NEED_ENTRIES` or
        :data:`LOG_ENDED`.

        Raises:
            NonDeterminismError: The next entry does not match the code.
            CorruptLogError: The entries contradict each other.
        """
        lookahead = self._lookahead
        while lookahead:
            offset, entry = lookahead[0]
            if deadline is not None and deadline <= entry.t:
                return FireTimer(deadline)
            lookahead.popleft()
            event = self._feed(entry, offset)
            if event is not None:
                return event
        return NEED_ENTRIES if self._more else LOG_ENDED

    def recorded_at_once(
        self,
        kind: str,
        name: str,
        inputs: dict[str, JSONValue] | None,
        deadline: float | None,
    ) -> OpCompleted | None:
        """The recorded end of the call about to be issued, if it comes next.

        The same answer :meth:`issue` and :meth:`next_event` would give, minus the
        pending operation: when the log's next entries are exactly this call's
        ``start``/``done`` and no timer falls due before them. Nothing changes
        until :meth:`take_at_once`; ``None`` for anything else, which the general
        path then handles (and reports, if it is wrong).
        """
        if not self.replaying or self.finished:
            return None
        lookahead = self._lookahead
        if not lookahead:
            return None
        position = self.next_id
        entry = lookahead[0][1]
        named: OpStarted | OpCompleted = entry  # type: ignore[assignment]
        if type(entry) is OpStarted:
            if entry.id != position or len(lookahead) < 2:
                return None
            entry = lookahead[1][1]
            if type(entry) is not OpCompleted or entry.name is not None:
                return None
        elif type(entry) is not OpCompleted or entry.name is None:
            return None
        if (
            entry.id != position
            or (deadline is not None and deadline <= entry.t)
            or named.name != name
            or named.kind != kind
            or named.inputs != inputs
        ):
            return None
        return entry

    def take_at_once(self, done: OpCompleted) -> None:
        """Consume what :meth:`recorded_at_once` returned: the position is used."""
        lookahead = self._lookahead
        if lookahead.popleft()[1] is not done:
            lookahead.popleft()
        self.next_id += 1

    def patched(self, change_id: str) -> bool | None:
        """Answer ``ctx.patched(change_id)``: :meth:`patch_verdict`, and when the new
        path is taken, the patch's position, its marker staged for the next write
        when live. ``None``: read more of the log, then ask again."""
        taken = self.patch_verdict(change_id)
        if taken:
            op = self.issue(Op("patch", change_id))
            if not self.replaying:
                self._staged.append(Done(op, True))
        return taken

    def patch_verdict(self, change_id: str) -> bool | None:
        """Whether ``ctx.patched(change_id)`` takes the new path at the next position.

        Live: yes. Replaying: yes if the log's entry for that position is this
        patch's marker, or if the log ends before recording anything for it (the
        job goes live from there); no if it records another operation there, or
        the job's end. ``None``: the entries read so far cannot tell; read more.
        """
        if not self.replaying:
            return True
        position = self.next_id
        for _, entry in self._lookahead:
            if type(entry) is JobFinished:
                return False
            if getattr(entry, "id", None) == position:
                return (
                    type(entry) is OpCompleted
                    and entry.kind == "patch"
                    and entry.name == change_id
                )
        return None if self._more else True

    def earlier_divergence(self, position: int) -> NonDeterminismError | Any | None:
        """The divergence at a position below ``position``, if the log shows one.

        The entries of one write are not in position order (``start`` entries of
        running operations come before the outcomes written with them), so an entry
        for an operation the code did not reach can come before the entry that shows
        where the code left the log's path (a removed ``ctx.patched``, say). That
        entry names both sides: it is the better report. :data:`NEED_ENTRIES` when
        it may lie further in the log.
        """
        unseen = [
            op
            for op in self._pending.values()
            if op.id < position and not op.start_logged and op.kind != "input"
        ]
        if not unseen:
            return None
        op = min(unseen, key=lambda o: o.id)
        for offset, entry in self._lookahead:
            if getattr(entry, "id", None) != op.id:
                continue
            if not isinstance(entry, (OpStarted, OpCompleted)) or entry.name is None:
                return None
            kind = entry.kind or op.kind
            if (kind, entry.name, entry.inputs) == (op.kind, op.name, op.inputs):
                return None
            recorded = OperationCall(kind, entry.name, entry.inputs)
            return NonDeterminismError(
                job=self.job,
                position=op.id,
                kind="other-operation",
                recorded=str(recorded),
                requested=op.describe(),
                recorded_call=recorded,
                requested_calls=(op.call(),),
                offset=offset,
            )
        return NEED_ENTRIES if self._more else None

    def go_live(self) -> list[Op]:
        """The log is over: the operations issued and not finished run live now."""
        self.replaying = False
        self._more = False
        ops = []
        for op in self._pending.values():
            if op.kind == "patch":  # taken where the log ends: record it now
                self._staged.append(Done(op, True))
                continue
            if not op.start_logged:
                self._unflushed.append(op)
            ops.append(op)
        return ops

    def check_end(
        self,
        ended: Ended,
        code_end: tuple[JSONValue, ErrorInfo | None] | None,
        code_next: JobStarted | None = None,
    ) -> None:
        """Compare the log's recorded end with how the code ended: its encoded
        result or its error (``None``: it still waits), or the next run it
        continued as new with (``code_next``: compared by function and arguments).

        Raises:
            NonDeterminismError: They differ.
        """
        if code_end is None:
            waiting = [op for op in self._pending.values() if op.kind != "input"]
            raise NonDeterminismError(
                job=self.job,
                position=min((op.id for op in waiting), default=self.next_id),
                kind="early-end",
                recorded="the job's end",
                requested=", ".join(op.describe() for op in waiting)
                if waiting
                else "to wait for something",
                requested_calls=[op.call() for op in waiting],
            )
        recorded = _end_json(ended.result, ended.error, ended.next)
        now_ended = _end_json(*code_end, code_next)
        if _comparable(now_ended) != _comparable(recorded):
            was, now = show_pair(recorded, now_ended)
            raise NonDeterminismError(
                job=self.job,
                position=self.next_id,
                kind="other-end",
                recorded=f"the job's end with {was}",
                requested=f"an end with {now}",
            )

    # -- composing what a live run writes --------------------------------------------

    def commit(self, batch: list[Outcome], t: float, started: float) -> list[Entry]:
        """The entries of one write: ``start`` entries for the operations issued
        and still running (at ``started``, the job clock before this batch), then
        the engine's staged outcomes and the batch's, at ``t``. Outcomes of
        abandoned operations are left out. The staged outcomes join ``batch``
        (the caller's list), first, so that :meth:`committed` sees them."""
        if self._staged:
            batch[:0] = self._staged
            self._staged = []
        unflushed = self._unflushed
        if len(batch) == 1:
            event = batch[0]
            if type(event) is Done and (
                not unflushed or (len(unflushed) == 1 and unflushed[0] is event.op)
            ):
                # The common step: one operation finished, nothing else to record.
                unflushed.clear()
                if event.op.abandoned:
                    return []
                return [self._done_entry(event, t)]
        entries: list[Entry] = self._starts(started, _finishing(batch))
        for event in batch:
            match event:
                case Done(op=op) if not op.abandoned:
                    entries.append(self._done_entry(event, t))
                case Emitted(op=op, value=value) if not op.abandoned:
                    entries.append(OpEmitted(op.id, t, value, seq=event.seq))
                case Attempted(op=op) if not op.abandoned:
                    event.t = t
                    entries.append(
                        OpAttempted(
                            op.id,
                            t,
                            event.attempt,
                            event.error,
                            event.duration,
                            event.retry_at,
                        )
                    )
                case Cancelled():
                    entries.append(JobCancelled(t, seq=event.seq))
                case Output():
                    entries.append(
                        OutputSent(
                            event.name, t, event.value, event.closed, event.error
                        )
                    )
        return entries

    def stage_output(self, output: Output) -> None:
        """Record ``output`` with the next write."""
        self._staged.append(output)

    def commit_alone(self, done: Done, t: float) -> list[Entry]:
        """:meth:`commit` of ``done`` alone while the engine is :attr:`idle`
        (nothing else to write), with :meth:`committed` done: the shortcut that
        commits an effect from inside ``ctx.run`` calls this."""
        op = done.op
        self._unflushed.clear()  # idle: it held ``op`` alone
        del self._pending[op.id]
        # _done_entry() for an operation no start entry named, inline: this is
        # the hot path of a live job.
        return [
            OpCompleted(op.id, t, done.result, done.error, op.kind, op.name, op.inputs)
        ]

    def committed(self, batch: list[Outcome]) -> None:
        """The batch is in the log: its finished operations are no longer pending,
        and its failed attempts are the operations' own."""
        pending = self._pending
        for event in batch:
            if type(event) is Done:
                pending.pop(event.op.id, None)
            elif type(event) is Attempted and not event.op.abandoned:
                _record_attempt(
                    event.op,
                    OpAttempted(
                        event.op.id,
                        event.t,
                        event.attempt,
                        event.error,
                        event.duration,
                        event.retry_at,
                    ),
                )
            if event.seq is not None:
                self.inbox_recorded.add(event.seq)

    def flush_starts(self, started: float) -> list[Entry]:
        """``start`` entries for every operation still running that no entry names."""
        return self._starts(started, None)

    def end(
        self,
        result: JSONValue,
        error: ErrorInfo | None,
        t: float,
        started: float,
        next: JobStarted | None = None,
    ) -> list[Entry]:
        """The job's last write: what still runs, staged markers, then its end
        (with ``next``: the job continues as new, as that run)."""
        entries: list[Entry] = self.commit([], t, started)
        entries.append(JobFinished(t, result, error, next))
        self.finished = True
        return entries

    # -- internals ---------------------------------------------------------------------

    def _starts(self, started: float, finishing: set[int] | None) -> list[Entry]:
        unflushed = self._unflushed
        if not unflushed:
            return []
        out: list[Entry] = []
        pending = self._pending
        for op in unflushed:
            if finishing and op.id in finishing:
                continue  # its ``done`` entry in this batch names it
            if op.id in pending and not op.abandoned and not op.start_logged:
                op.start_logged = True
                out.append(OpStarted(op.id, started, op.kind, op.name, op.inputs))
        unflushed.clear()
        return out

    @staticmethod
    def _done_entry(event: Done, t: float) -> OpCompleted:
        op = event.op
        if op.start_logged:
            return OpCompleted(op.id, t, event.result, event.error, seq=event.seq)
        return OpCompleted(
            op.id,
            t,
            event.result,
            event.error,
            op.kind,
            op.name,
            op.inputs,
            seq=event.seq,
        )

    def _feed(
        self, entry: Entry, offset: int
    ) -> Done | Emitted | Attempted | Cancelled | Ended | None:
        if self.finished:
            raise CorruptLogError(
                job=self.job,
                offset=offset,
                reason=f"an entry of type {entry.type!r} after the job's end entry",
            )
        match entry:
            case OpCompleted():
                op = self._match(entry.id, entry.kind, entry.name, entry.inputs, offset)
                if entry.name is None and not op.start_logged:
                    # Without a name the entry relies on an earlier start entry to
                    # say what it completes; delivering it unchecked could hand a
                    # result to another call.
                    raise CorruptLogError(
                        job=self.job,
                        offset=offset,
                        reason=(
                            f"operation #{op.id} completes here but the log holds "
                            "no start entry naming it"
                        ),
                    )
                del self._pending[op.id]
                if entry.seq is not None:
                    self.inbox_recorded.add(entry.seq)
                return Done(op, entry.result, entry.error, entry.t)
            case OpEmitted():
                op = self._match(entry.id, None, None, None, offset)
                if not op.start_logged:
                    # A live run writes an operation's start entry no later than
                    # its first value: without it, nothing says whose value it is.
                    raise CorruptLogError(
                        job=self.job,
                        offset=offset,
                        reason=(
                            f"operation #{op.id} records a value here but the log "
                            "holds no start entry naming it"
                        ),
                    )
                if not op.streaming:
                    raise NonDeterminismError(
                        job=self.job,
                        position=op.id,
                        kind="unexpected-value",
                        recorded=f"a value produced by {op.describe()}",
                        requested=op.describe(),
                        requested_calls=(op.call(),),
                        offset=offset,
                        hint=(
                            "the log holds values streamed by this operation, "
                            "which no longer streams"
                        ),
                    )
                if entry.seq is not None:
                    self.inbox_recorded.add(entry.seq)
                return Emitted(op, entry.value, entry.t)
            case OpStarted():
                op = self._match(entry.id, entry.kind, entry.name, entry.inputs, offset)
                op.start_logged = True
                return None
            case OpAttempted():
                return self._attempted(entry, offset)
            case JobCancelled():
                if entry.seq is not None:
                    self.inbox_recorded.add(entry.seq)
                return Cancelled(entry.t)
            case JobFinished():
                self.finished = True
                return Ended(entry.result, entry.error, entry.t, entry.next)
            case OutputSent():
                # Replay sends the values again; counted, so none is written twice.
                recorded = self.outputs_recorded
                recorded[entry.name] = recorded.get(entry.name, 0) + 1
                return None
            case JobStarted():
                raise CorruptLogError(
                    job=self.job,
                    offset=offset,
                    reason="a second job entry (a log holds exactly one job)",
                )
        raise CorruptLogError(  # pragma: no cover - the match covers every entry
            job=self.job, offset=offset, reason=f"unknown entry {entry!r}"
        )

    def _attempted(self, entry: OpAttempted, offset: int) -> Attempted:
        """A failed attempt of a pending effect: the operation keeps it; durable
        code is not told (it sees the call's end only)."""
        op = self._match(entry.id, None, None, None, offset)
        problem = None
        if not op.start_logged:
            # A live run writes an operation's start entry no later than its
            # first attempt entry: without it, nothing says whose attempt it is.
            problem = "but the log holds no start entry naming it"
        elif op.kind != "effect":
            problem = f"but it is a {op.kind}, not an effect"
        else:
            expected = len(op.attempts) + 1 if op.attempts else 1
            if entry.attempt != expected:
                problem = f"where attempt {expected} was due"
        if problem is not None:
            raise CorruptLogError(
                job=self.job,
                offset=offset,
                reason=(
                    f"operation #{op.id} records a failed attempt "
                    f"{entry.attempt} here {problem}"
                ),
            )
        _record_attempt(op, entry)
        return Attempted(
            op, entry.attempt, entry.error, entry.duration, entry.retry_at, entry.t
        )

    def _match(
        self,
        op_id: int,
        kind: str | None,
        name: str | None,
        inputs: dict[str, JSONValue] | None,
        offset: int,
    ) -> Op:
        op = self._pending.get(op_id)
        if op is None:
            call = OperationCall(kind, name, inputs) if kind and name else None
            recorded = str(call) if call is not None else f"operation #{op_id}"
            if op_id < self.next_id:
                raise NonDeterminismError(
                    job=self.job,
                    position=op_id,
                    kind="position-finished",
                    recorded=recorded,
                    requested="nothing more for it",
                    recorded_call=call,
                    offset=offset,
                    hint="the code already finished with that position",
                )
            raise NonDeterminismError(
                job=self.job,
                position=op_id,
                kind="not-reached",
                recorded=recorded,
                requested=None,
                recorded_call=call,
                offset=offset,
                hint="the code did not reach that operation",
            )
        if name is not None and (
            op.name != name
            or op.kind != kind
            or (op.inputs != inputs and not self._same_inputs(op, inputs))
        ):
            call = OperationCall(kind or op.kind, name, inputs)
            raise NonDeterminismError(
                job=self.job,
                position=op_id,
                kind="other-operation",
                recorded=str(call),
                requested=op.describe(),
                recorded_call=call,
                requested_calls=(op.call(),),
                offset=offset,
            )
        return op

    def _same_inputs(self, op: Op, inputs: dict[str, JSONValue] | None) -> bool:
        check = self.same_inputs
        return check is not None and check(op, inputs)


def _record_attempt(op: Op, entry: OpAttempted) -> None:
    if op.attempts is None:
        op.attempts = [entry]
    else:
        op.attempts.append(entry)


def _finishing(batch: list[Outcome]) -> set[int] | None:
    """Operations whose ``done`` entry is in ``batch`` and that emitted nothing in it."""
    done: set[int] | None = None
    emitted: set[int] | None = None
    for event in batch:
        if type(event) is Done:
            done = done or set()
            done.add(event.op.id)
        elif type(event) is Emitted:
            emitted = emitted or set()
            emitted.add(event.op.id)
    if done and emitted:
        done -= emitted
    return done


_CANCELLED = "duron._errors.JobCancelledError"


def _end_json(
    result: JSONValue, error: ErrorInfo | None, next: JobStarted | None = None
) -> dict[str, Any]:
    """An end as its entry holds it: ``{"result": ...}``, the error's fields, or
    the next run (its function and arguments: its seed and time are derived)."""
    if next is not None:
        return {"continue as new": {"function": next.fn, "args": next.args}}
    return error.to_json() if error is not None else {"result": result}


def _comparable(d: dict[str, Any]) -> Any:
    if "type" in d:  # an error: compare type and message, not args
        if d["type"] == _CANCELLED:
            # Its message names the job's label (a log path): a copy of the log
            # under another path is the same job, cancelled the same way.
            return ("cancelled",)
        return ("error", d["type"], d["message"])
    if "continue as new" in d:
        return ("continue", d["continue as new"])
    return ("result", d["result"])
