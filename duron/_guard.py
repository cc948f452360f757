"""The determinism guard: durable code that reads the clock or a random source fails.

Durable code must take the same path on every replay, so it may not read what
differs from one run to the next: the wall clock, the global ``random``
generator, the operating system's random bytes (``uuid.uuid4``, ``secrets``).
Those calls are plain function calls, invisible to the durable loop; the guard
finds them with a profile hook (``sys.setprofile``), which sees every call a
C function gets:

* it is on only while :func:`guarded` is active (``duron.testing.guard()``): a
  job opened then runs on :class:`GuardedLoop`, whose callbacks (every step of
  durable code) run under the hook. A job opened without it runs on the plain
  :class:`~duron._durable_loop.DurableLoop`: nothing is hooked, nothing costs.
* it looks at calls made while Duron's loop is the running loop: an effect's
  first step, run from inside ``ctx.run``, runs on the host's loop and is free
  to read the clock. Calls made by Duron's own code, and by ``logging`` (a log
  record's time), are let through.
* a call it refuses raises :class:`~duron.NondeterministicCallError` right
  there, in durable code, naming the call, where it was made, and what to use
  instead.
"""

from __future__ import annotations

import _thread
import contextlib
import datetime
import gc
import logging
import os
import random
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from duron._durable_loop import DurableLoop, in_durable_code
from duron._errors import NondeterministicCallError

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["GuardedLoop", "guard_active", "guarded", "loop_class"]

_DIFFERS = "its result differs on every run, so a replay could take another path"
_CLOCK = "use `await ctx.time()` (or ctx.time_ns()), the job's recorded clock"
_RANDOM_BYTES = (
    "make the value in an @duron.effect (its result is recorded), or derive it "
    "from ctx.random() (e.g. uuid.UUID(int=ctx.random().getrandbits(128), "
    "version=4))"
)

# Builtins refused by identity: (the call, why, what instead).
_REFUSED: dict[Any, tuple[str, str, str]] = {
    time.time: ("time.time()", _DIFFERS, _CLOCK),
    time.time_ns: ("time.time_ns()", _DIFFERS, _CLOCK),
    time.monotonic: ("time.monotonic()", _DIFFERS, _CLOCK),
    time.monotonic_ns: ("time.monotonic_ns()", _DIFFERS, _CLOCK),
    time.perf_counter: ("time.perf_counter()", _DIFFERS, _CLOCK),
    time.perf_counter_ns: ("time.perf_counter_ns()", _DIFFERS, _CLOCK),
    os.urandom: ("os.urandom()", _DIFFERS, _RANDOM_BYTES),
    # A thread's work is not recorded, and its callbacks cannot reach durable
    # code (anyio.to_thread would wait forever): refused where it starts.
    _thread.start_new_thread: (
        "_thread.start_new_thread() (a new thread)",
        "its work would not be recorded, and its callbacks cannot reach durable code",
        "do thread work in a plain-def @duron.effect (it runs in a worker thread)",
    ),
}
if hasattr(os, "getrandom"):
    _REFUSED[os.getrandom] = ("os.getrandom()", _DIFFERS, _RANDOM_BYTES)
if hasattr(_thread, "start_joinable_thread"):  # how threading starts one on 3.13+
    _REFUSED[_thread.start_joinable_thread] = _REFUSED[_thread.start_new_thread]

# uuid.uuid1 reads the clock in C (libuuid) where it can: refused at its call.
_UUID1 = uuid.uuid1.__code__
# The generator random.random() & co. use.
_GLOBAL_RANDOM: object = getattr(random.random, "__self__", None)
_NOW = frozenset({"now", "utcnow", "today"})

# Code whose own calls are not durable code's: Duron's and logging's.
_LET_THROUGH = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.abspath(logging.__file__),
)
# The standard library: a refused call made inside it (uuid.uuid4 reading
# os.urandom) is reported where durable code called into it; so is one made
# inside an installed library (anyio.to_thread starting a thread), when the
# code that called into it is not installed too.
_STDLIB = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
_LIBRARIES = tuple(
    {os.path.abspath(sysconfig.get_path(p)) + os.sep for p in ("purelib", "platlib")}
)


def _refusal(arg: Any) -> tuple[str, str, str] | None:
    """What ``arg``, a C function about to be called, is, if the guard refuses it."""
    try:
        found = _REFUSED.get(arg)
    except TypeError:  # unhashable: not one of them
        found = None
    if found is not None:
        return found
    owner = getattr(arg, "__self__", None)
    if owner is _GLOBAL_RANDOM:
        return (
            f"random.{arg.__name__}() (the global random generator)",
            _DIFFERS,
            "use ctx.random(), a generator seeded for this point of the job",
        )
    if (
        isinstance(owner, type)
        and issubclass(owner, datetime.date)
        and arg.__name__ in _NOW
    ):
        return (
            f"{owner.__name__}.{arg.__name__}()",
            _DIFFERS,
            "use datetime.fromtimestamp(await ctx.time(), timezone.utc)",
        )
    return None


def _hook(frame: FrameType, event: str, arg: Any) -> None:
    if _collecting:
        return  # a garbage collection's callbacks (a test tool's timing) are not durable code
    if event == "c_call":
        found = _refusal(arg)
        at: FrameType | None = frame
    elif event == "call" and frame.f_code is _UUID1:
        found = ("uuid.uuid1()", _DIFFERS, _RANDOM_BYTES)
        at = frame.f_back
    else:
        return
    if found is None or at is None or not in_durable_code():
        return
    caller = _caller(at)
    if caller is None:
        return
    call, reason, advice = found
    raise NondeterministicCallError(
        call=call,
        where=f"{caller.f_code.co_filename}:{caller.f_lineno}",
        reason=reason,
        advice=advice,
    )


def _caller(frame: FrameType) -> FrameType | None:
    """The frame of durable code that made the call, or None when it is Duron's
    or logging's own (or the standard library's alone)."""
    first: FrameType | None = None
    f: FrameType | None = frame
    while f is not None:
        filename = f.f_code.co_filename
        if filename.startswith(_LET_THROUGH):
            return first  # called by an installed library Duron called: its own
        if not filename.startswith(_STDLIB):
            if not filename.startswith(_LIBRARIES):
                return f
            if first is None:
                first = f
        f = f.f_back
    return first


def _run_guarded(callback: Callable[..., object], *args: Any) -> None:
    # Armed per callback: a refused call disarms the hook (it raised).
    previous = sys.getprofile()
    sys.setprofile(_hook)
    try:
        callback(*args)
    finally:
        sys.setprofile(previous)


class GuardedLoop(DurableLoop):
    """A :class:`~duron._durable_loop.DurableLoop` whose every callback runs under
    the guard's hook."""

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: Any = None,
    ) -> Any:
        return super().call_soon(_run_guarded, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Any = None,
    ) -> Any:
        return super().call_at(when, _run_guarded, callback, *args, context=context)


_active = 0
_collecting = False


def _gc_began(phase: str, info: dict[str, int]) -> None:
    """First of the collector's callbacks, in both its phases: the ones after
    it run for the collection, not for durable code."""
    global _collecting
    _collecting = True


def _gc_ended(phase: str, info: dict[str, int]) -> None:
    """Last of them."""
    global _collecting
    _collecting = False


def guard_active() -> bool:
    """Whether jobs opened now run under the guard."""
    return _active > 0


def loop_class() -> type[DurableLoop]:
    """The loop a job opened now runs its durable code on."""
    return GuardedLoop if _active else DurableLoop


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Jobs whose run starts inside the block run under the guard (nestable)."""
    global _active
    if not _active:
        gc.callbacks.insert(0, _gc_began)
        gc.callbacks.append(_gc_ended)
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if not _active:
            gc.callbacks.remove(_gc_began)
            gc.callbacks.remove(_gc_ended)
