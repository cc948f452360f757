"""A running job's side of its inbox: items sent through the store, into the log.

A storage that keeps an inbox for its job (the SQL stores' logs) offers it as an
optional capability, :class:`InboxSource`, found with :func:`inbox_source` the way
``append_nowait`` is. Once the run is live, :class:`InboxFeed` takes the items in
order and turns each into the outcome the host's own input would make
(:mod:`duron._host_input`): an :class:`~duron._operations.Emitted` value, a
:class:`~duron._operations.Done` close or future result, each carrying the item's
``seq``. They go through the driver's queue like any host input: recorded, then
delivered. An item whose ``seq`` the log already records (read while replaying,
or written since) is never pushed again, so a run that crashed between "stored"
and "recorded" records it on the next run, and one that crashed after does not
record it twice.

What the run cannot use is dropped (logged as a warning) and deleted from the
inbox: a value for a stream that was closed or a parameter the code no longer
has, or that no longer validates as its type; a future result for a future that
was completed or abandoned meanwhile. A result for a future the code has not
created yet (its id is past the code's position) is held until it does. A result
that does not validate as the future's type is recorded as the future's error:
the durable code's ``await`` raises :class:`~duron.PayloadEncodeError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from duron._codec import describe_type, explain
from duron._effect_runner import Fatal
from duron._errors import PayloadEncodeError, StoreUnavailableError
from duron._operations import Cancelled, Done, Emitted
from duron._recorded_errors import error_info

if TYPE_CHECKING:
    from duron._driver import Driver
    from duron._inbox import InboxItem
    from duron._storage import LogStorage

__all__ = ["IDLE_POLL", "InboxFeed", "InboxSource", "inbox_source"]

_log = logging.getLogger("duron")

IDLE_POLL = 10.0
"""Seconds between two looks at the inbox when no wake-up came: a safety net
(the stores ring a job's feed when input is stored for it, from any process)."""

_HELD_POLL = 0.05  # while a future result waits for its future to be created
_RETRY = 0.5  # after the store could not be reached


class InboxSource(Protocol):
    """What a log storage with an inbox offers the run (optional)."""

    async def inbox_fetch(self, after: int, done: Sequence[int]) -> list[InboxItem]:
        """The items numbered after ``after``, oldest first (a batch of them);
        first deletes the items ``done`` (recorded or dropped)."""
        ...

    def inbox_mark(self) -> int:
        """A mark of the wake-ups so far, for :meth:`inbox_wait`."""
        ...

    async def inbox_wait(self, mark: int, timeout: float) -> None:
        """Return once something may have been sent since ``mark``, or after
        ``timeout`` seconds."""
        ...


def inbox_source(storage: LogStorage) -> InboxSource | None:
    """``storage`` as an :class:`InboxSource`, if it keeps an inbox."""
    if getattr(storage, "inbox_fetch", None) is None:
        return None
    return storage  # type: ignore[return-value]


class _Held:
    pass


_HOLD: Any = _Held()


class InboxFeed:
    """Feeds one run's inbox into its driver (see the module docstring)."""

    def __init__(self, driver: Driver, source: InboxSource) -> None:
        self._driver = driver
        self._source = source

    async def run(self) -> None:
        """Take items until the run ends (the driver cancels this task)."""
        source = self._source
        recorded = self._driver.engine.inbox_recorded
        after = 0
        held: list[InboxItem] = []
        done: list[int] = []
        driver = self._driver
        while True:
            driver.taking_input(True)
            mark = source.inbox_mark()
            try:
                items = await source.inbox_fetch(after, done)
            except StoreUnavailableError as exc:
                _log.info("duron: job %s: inbox: %s", self._driver.label, exc)
                await anyio.sleep(_RETRY)
                continue
            except Exception as exc:  # the store refused: the run fails with it
                self._driver.push(Fatal(exc))
                return
            done = []
            if items:
                after = items[-1].seq
            waiting = held + items
            held = []
            pushed: list[Done | Emitted | Cancelled] = []
            for item in waiting:
                if item.seq in recorded:
                    done.append(item.seq)
                    continue
                event = self._outcome(item)
                if event is _HOLD:
                    held.append(item)
                elif event is None:
                    done.append(item.seq)
                else:
                    self._driver.push(event)
                    pushed.append(event)
            for event in pushed:
                await event.ack.wait()
                if not event.recorded:
                    return  # the run stops: what is left stays in the inbox
                assert event.seq is not None
                done.append(event.seq)
            if items:
                continue  # there may be more already
            # All it found is recorded (or held for a future not made yet).
            driver.taking_input(False)
            await source.inbox_wait(mark, _HELD_POLL if held else IDLE_POLL)

    def _outcome(self, item: InboxItem) -> Done | Emitted | Cancelled | Any | None:
        """The outcome recording ``item``; ``None`` to drop it, :data:`_HOLD` to
        keep it for later."""
        driver = self._driver
        if item.kind == "cancel":
            return Cancelled(ack=anyio.Event(), seq=item.seq)
        if item.kind == "future":
            target = item.target
            run, colon, fid = target.partition(":")
            if colon:  # a child job's end: "RUN:FUTURE"
                if int(run) != driver.run_number:
                    return self._drop(item, "it is for a future of another run")
                target = fid
            op = driver.host_input.find_future(target)
            if op is None:
                if int(target) >= driver.engine.next_id:
                    return _HOLD  # the code has not created it yet
                return self._drop(item, "the future was completed or abandoned")
            op.closed = True
            if item.error is not None:
                return Done(op, None, item.error, ack=anyio.Event(), seq=item.seq)
            try:
                decoded = driver.codec.decode(item.data, op.annotation)
            except Exception as exc:
                error = PayloadEncodeError(
                    what=f"result for future {item.target!r} ({op.name})",
                    type_name=describe_type(op.annotation),
                    detail=f"does not validate: {explain(exc)}",
                    job=driver.label,
                )
                return Done(
                    op,
                    None,
                    error_info(error),
                    cause=error,
                    ack=anyio.Event(),
                    seq=item.seq,
                )
            return Done(op, item.data, decoded=decoded, ack=anyio.Event(), seq=item.seq)
        op = driver.inputs.get(item.target)
        if op is None:
            return self._drop(item, f"the code has no parameter {item.target!r}")
        if op.closed:
            return self._drop(item, f"{item.target!r} was closed")
        if item.kind == "close":
            op.closed = True
            return Done(op, None, item.error, ack=anyio.Event(), seq=item.seq)
        try:
            decoded = driver.codec.decode(item.data, op.annotation)
        except Exception as exc:
            return self._drop(
                item,
                f"it does not validate as {describe_type(op.annotation)}: "
                f"{explain(exc)}",
            )
        return Emitted(op, item.data, decoded=decoded, ack=anyio.Event(), seq=item.seq)

    def _drop(self, item: InboxItem, why: str) -> Any:
        """Log why ``item`` is dropped; ``None`` (what :meth:`_outcome` returns)."""
        _log.warning(
            "duron: job %s: inbox item %d (%s %s) dropped: %s",
            self._driver.label,
            item.seq,
            item.kind,
            item.target,
            why,
        )
        return None
