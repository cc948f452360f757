"""Running one effect live: call it, encode its outcome, hand back an event.

Async effects are awaited on the host loop, plain ``def`` effects run in a worker
thread (never blocking the loop), streaming effects are iterated with each yielded
action emitted as it comes. The result is encoded and decoded again here, so durable
code receives exactly what a replay would rebuild, and a value that cannot be
encoded never reaches the log (the job fails with a :class:`~duron.PayloadError`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from duron._codec import describe_type, explain
from duron._errors import DuronError, PayloadError
from duron._exceptions import error_info
from duron._ops import Done, Emitted, Event, Fatal, LiveOp

if TYPE_CHECKING:
    from duron._codec import Codec

__all__ = ["result_event", "run_effect"]


class _Refused(Exception):
    """Raised inside an effect's task: Duron refused its output; fail the job."""

    def __init__(self, error: DuronError) -> None:
        super().__init__(error)
        self.error = error


async def run_effect(
    lop: LiveOp, codec: Codec, label: str, push: Callable[[Event], None]
) -> None:
    """Run ``lop``'s effect and push its outcome; silent if cancelled."""
    spec = lop.spec
    assert spec is not None
    if lop.abandoned:
        return
    try:
        if spec.kind == "async":
            value = await spec.fn(*lop.args, **lop.kwargs)
        elif spec.kind == "sync":
            value = await anyio.to_thread.run_sync(
                functools.partial(spec.fn, *lop.args, **lop.kwargs)
            )
        elif spec.kind == "stream":
            value = await _run_stream(lop, codec, label, push)
        else:
            value = spec.fn(*lop.args, **lop.kwargs)
            if inspect.isawaitable(value):
                value = await value
    except _Refused as refused:
        push(Fatal(refused.error))
        return
    except Exception as exc:
        push(Done(lop, None, error_info(exc), exc))
        return
    except asyncio.CancelledError as exc:
        if not _cancelled_itself(lop):
            raise
        push(Done(lop, None, error_info(exc), exc))
        return
    push(result_event(lop, value, codec, label))


def _cancelled_itself(lop: LiveOp) -> bool:
    """Whether the asyncio CancelledError being handled is the effect's own doing,
    not a cancellation of its task (which only the job asks for)."""
    if lop.abandoned:
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio: trio cancels with an exception of its own
        return True
    cancelling = getattr(task, "cancelling", None)  # 3.11+: cancel() requests
    return cancelling is None or cancelling() == 0


def result_event(lop: LiveOp, value: Any, codec: Codec, label: str) -> Done | Fatal:
    """The event for an effect that returned ``value``: its encoded result, or the
    job's failure when the value cannot be encoded as annotated."""
    spec = lop.spec
    assert spec is not None
    ann = spec.result_annotation
    try:
        data = codec.encode(value, ann)
        # Durable code gets the value as replay will rebuild it, and what
        # cannot be rebuilt never reaches the log.
        decoded = codec.decode(data, ann)
    except Exception as err:
        return Fatal(
            PayloadError(
                what=f"result of effect {spec.name}",
                type_name=describe_type(ann),
                detail=f"cannot encode {type(value).__qualname__}: {explain(err)}",
                position=lop.rec.id,
                job=label,
            )
        )
    return Done(lop, data, decoded=decoded)


async def _run_stream(
    lop: LiveOp, codec: Codec, label: str, push: Callable[[Event], None]
) -> Any:
    spec = lop.spec
    assert spec is not None
    rest = lop.args[1:] if lop.args else ()
    kwargs = dict(lop.kwargs)
    kwargs.pop(spec.sig.params[0].name, None)
    state = lop.state  # the folded state so far: a resumed stream continues from it
    agen = spec.fn(state, *rest, **kwargs)
    try:
        action = await agen.__anext__()
        while True:
            try:
                data = codec.encode(action, spec.action_annotation)
                # Fold what replay will fold: the action as the log gives it back.
                action = codec.decode(data, spec.action_annotation)
            except Exception as err:
                refused = PayloadError(
                    what=f"value yielded by streaming effect {spec.name}",
                    type_name=describe_type(spec.action_annotation),
                    detail=f"cannot encode {type(action).__qualname__}: {explain(err)}",
                    position=lop.rec.id,
                    job=label,
                )
                refused.__cause__ = err
                raise _Refused(refused) from err
            push(Emitted(lop, data, action))
            state = spec.reducer(state, action)
            action = await agen.asend(state)
    except StopAsyncIteration:
        return state
    finally:
        await agen.aclose()
