"""The replay phase: the log's entries, fed one by one into the durable loop.

Every recorded entry first advances the virtual clock to the entry's time (firing
the timers due by then, in order), then is matched by the replay core and
delivered. Entries are read ahead in blocks, which lets a call whose recorded
outcome is next in the log take it at once (:meth:`ReplayPhase._replay_at_once`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duron._driver import DriverBase
from duron._errors import (
    NonDeterminismError,
)
from duron._exceptions import rebuild
from duron._log import (
    Entry,
    OpCompleted,
    OpStarted,
    decode_entry,
)
from duron._ops import (
    Outcome,
    Recorded,
)
from duron._replay import Cancel, Deliver, Emit, Finish, OpRecord

if TYPE_CHECKING:
    from duron._effect import EffectSpec
    from duron._json import JSONValue


__all__ = ["ReplayPhase"]


class ReplayPhase(DriverBase):
    """Replaying a log into durable code (see the module docstring)."""

    # Declared in DriverBase; repeated because _fill_lookahead assigns it here, and
    # an unannotated assignment in a subclass leaves the public type to inference.
    entries_read: int

    async def _fill_lookahead(self, size: int = 256) -> None:
        """Read up to ``size`` entries ahead, so that replay can take recorded
        outcomes synchronously (see :meth:`_replay_at_once`)."""
        records = self._records
        if records is None:
            return
        append = self._lookahead.append
        label = self.label
        read = 0
        try:
            for _ in range(size):
                offset, raw = await records.__anext__()
                append((offset, decode_entry(raw, job=label, offset=offset)))
                read += 1
        except StopAsyncIteration:
            self._records = None
        finally:
            self.entries_read += read

    async def _next_entry(self) -> tuple[int, Entry] | None:
        if self._lookahead:
            return self._lookahead.popleft()
        return await self._read_entry()

    async def _replay(self, entry: Entry, offset: int) -> Finish | None:
        loop = self.loop
        t = entry.t
        if not loop.advance_quietly(t):
            # Timers due by this entry fire first; a ctx.patched they lead to is
            # answered by the log from this entry on. Until it is fed, this entry
            # (not the lookahead's first) is the next: no outcome may jump it.
            self._current = entry
            try:
                await self._advance(t)
            finally:
                self._current = None
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
        if loop.due_by(entry.t):
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
        loop.advance(entry.t)  # only moves the clock: no timer is due (checked above)
        return out

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
        found = await self._scan_ahead(
            lambda entry: True if getattr(entry, "id", None) == op.id else None
        )
        if found is None:
            return None
        offset, entry, _ = found
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
