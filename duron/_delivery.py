"""Where outcomes meet durable code: the futures it awaits, and its injected inputs.

The driver hands every outcome, recorded a moment ago or read back from the log,
to :func:`deliver_done` or :func:`deliver_emit`, which decode it into the annotated
type (unless a live run already did) and resolve what durable code waits on: an
operation's future, a stream or signal parameter, a streaming effect's state.
:func:`inject` builds the ``= duron.Provided`` parameters when a run begins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from duron._codec import decode_recorded
from duron._host_streams import OutputChannel
from duron._operations import UNDECODED, Op
from duron._recorded_errors import rebuild
from duron._retry import ATTEMPTS_ATTR, attempts_view
from duron._signal import Signal
from duron._stream import Channel, Stream, StreamWriter

if TYPE_CHECKING:
    from duron._driver import Driver
    from duron._entries import ErrorInfo
    from duron._json import JSONValue

__all__ = ["OpFuture", "deliver_done", "deliver_emit", "inject"]


class OpFuture(asyncio.Future[Any]):
    """The future durable code awaits for an operation.

    Cancelling it (durable code gave up: a timeout, a cancelled task) tells the
    driver at once, without the cost of a done-callback on every operation.
    """

    __slots__ = ("_cancelled_hook", "_op")

    # Set by bind() right after construction: no __init__ of its own keeps the C
    # constructor, which is half the cost of one written in Python.
    _op: Op
    _cancelled_hook: Callable[[Op], None]

    def bind(self, op: Op, on_cancel: Callable[[Op], None]) -> None:
        self._op = op
        self._cancelled_hook = on_cancel

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._cancelled_hook(self._op)
        return True


def deliver_done(
    driver: Driver,
    op: Op,
    result: JSONValue,
    error: ErrorInfo | None,
    cause: BaseException | None = None,
    decoded: Any = UNDECODED,
) -> None:
    """``op`` ended with ``result`` or ``error``: resolve what durable code awaits."""
    kind = op.kind
    if kind == "input":  # the host closed a stream or signal parameter
        op.closed = True
        if not op.fut.done():
            op.fut.set_result(None)
        if isinstance(op.target, Channel):
            op.target.close(rebuild(error) if error is not None else None)
        return
    if kind == "patch":
        return
    if op.sink is not None:
        op.sink.close()
    fut = op.fut
    if fut.done():
        return
    if error is not None:
        exc = rebuild(error, cause)
        if op.attempts:  # the attempts retried before this last one
            setattr(exc, ATTEMPTS_ATTR, attempts_view(op.attempts))
        fut.set_exception(exc)
        return
    if decoded is UNDECODED:
        decoded = decode_recorded(
            driver.codec,
            result,
            op.annotation if kind == "future" else op.spec.result_annotation,
            what=f"result of {op.name}",
            job=driver.label,
            position=op.id,
        )
    fut.set_result(decoded)


def deliver_emit(
    driver: Driver, op: Op, value: JSONValue, decoded: Any = UNDECODED
) -> None:
    """``op`` produced ``value`` before its end: a value sent to a host input, or
    a streaming effect's action, folded into its state."""
    if op.kind == "input":
        if decoded is UNDECODED:
            decoded = decode_recorded(
                driver.codec,
                value,
                op.annotation,
                what=f"value sent to {op.name}",
                job=driver.label,
                position=op.id,
            )
        op.state = (op.state or 0) + 1  # values recorded so far (recorded_count)
        if isinstance(op.target, Signal):
            op.target.trigger(decoded)
        else:
            op.target.put(decoded)
        return
    spec = op.spec
    if decoded is UNDECODED:
        decoded = decode_recorded(
            driver.codec,
            value,
            spec.action_annotation,
            what=f"value yielded by {op.name}",
            job=driver.label,
            position=op.id,
        )
    op.state = spec.reducer(op.state, decoded)
    if op.sink is not None:
        op.sink.put(op.state)


def inject(driver: Driver) -> dict[str, Any]:
    """Build the objects for ``= duron.Provided`` parameters.

    Stream and signal parameters (host -> job) are operations, issued first, in
    parameter order, so that their values are recorded at their positions;
    ``StreamWriter`` parameters (job -> host) are channels the host reads.
    """
    engine, loop = driver.engine, driver.loop
    out: dict[str, Any] = {}
    for inj in driver.dfn.injections:
        if inj.kind == "writer":
            ch = OutputChannel(inj.name, inj.annotation, driver.codec)
            if driver.keeps_output:
                ch.record = driver.record_output
            driver.outputs[inj.name] = ch
            out[inj.name] = StreamWriter(ch)  # type: ignore[arg-type]
            continue
        target: Any
        if inj.kind == "signal":
            target = out[inj.name] = Signal(inj.name)
        else:
            target = Channel(inj.name)
            out[inj.name] = Stream(target)
        op = engine.issue(Op("input", inj.name, streaming=True))
        op.fut = loop.create_future()
        op.annotation = inj.annotation
        op.target = target
        driver.inputs[inj.name] = op
    return out
