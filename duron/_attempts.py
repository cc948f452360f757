"""Running an effect attempt after attempt: its retry policy and its timeouts.

An effect call with options (``@duron.effect(retry=..., timeout=...)``,
``ctx.options(...)``) is one operation to durable code, whatever happens here:
the host runs attempt 1; when it fails and the policy allows another, the failed
attempt is recorded (an ``attempt`` entry: number, error, duration, and when the
next attempt is due) and, once it is in the log, the runner waits until that time
on the job's clock and runs the next attempt; the call's end is the operation's
usual ``done`` entry. So a replay takes the recorded attempts and waits for none,
and a job resumed in the middle of a backoff (the log ends with an attempt entry)
starts at the next attempt's number and waits only until its recorded due time.

Timeouts cancel the attempt's task and count as a failed attempt (a
``TimeoutError``). A plain ``def`` effect runs in a worker thread, which cannot
be stopped: past its timeout the thread is abandoned, runs on to its end, and
whatever it returns or raises is discarded.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from duron._effect_outcome import Fatal, Report, raised_outcome, result_outcome
from duron._identity import CURRENT_OPERATION
from duron._operations import Attempted, Done, Op
from duron._options import EffectOptions
from duron._retry import NO_RETRY, retryable

if TYPE_CHECKING:
    from duron._codec import Codec
    from duron._storage import Lease

__all__ = ["run_attempts"]

_NO_OPTIONS = EffectOptions()


async def run_attempts(
    op: Op,
    codec: Codec,
    label: str,
    report: Report,
    clock: Callable[[], float],
    seed: str,
    lease: Lease | None = None,
) -> None:
    """Run ``op``'s effect until an attempt succeeds or its options allow no
    other, and report the call's outcome (and each failed attempt before it).
    After a backoff, an attempt starts only on a lease still this writer's.

    Whatever goes wrong here that is not the effect's (a clock that raises)
    fails the job rather than leaving durable code waiting for ever."""
    if op.stopped:
        return
    try:
        await _run(op, codec, label, report, clock, seed, lease)
    except Exception as exc:
        report(Fatal(exc))


async def _run(
    op: Op,
    codec: Codec,
    label: str,
    report: Report,
    clock: Callable[[], float],
    seed: str,
    lease: Lease | None,
) -> None:
    CURRENT_OPERATION.set(op)
    spec = op.spec
    options: EffectOptions = spec.options or _NO_OPTIONS
    policy = options.retry or NO_RETRY
    total = options.total_timeout
    recorded = op.attempts or ()
    number = len(recorded) + 1
    first_started: float | None = None
    if recorded:  # resumed after failed attempts: the next one is due at retry_at
        last = recorded[-1]
        first_started = recorded[0].t - recorded[0].duration
        if not policy.allows(number, first_started, last.retry_at) or (
            total is not None and last.retry_at >= first_started + total
        ):
            # Today's options allow no other attempt: the call ends as the last
            # one did.
            report(Done(op, None, last.error))
            return
        await _sleep_until(last.retry_at, clock)
        await _check(lease)
    jitter_seed = f"{seed}:{op.id}"
    while True:
        started = clock()
        if first_started is None:
            first_started = started
        cut, reason = _limit(options, first_started, started, spec.name, number)
        try:
            value = await _attempt(op, cut, reason)
        except BaseException as exc:
            outcome = raised_outcome(op, exc)
            if outcome is None:
                raise  # the job stopped it, or not an Exception: nothing recorded
            ended = clock()
            if retryable(policy, exc):
                due = ended + policy.delay(number, jitter_seed)
                if policy.allows(number + 1, first_started, due) and (
                    total is None or due < first_started + total
                ):
                    failed = Attempted(
                        op,
                        number,
                        outcome.error,  # type: ignore[arg-type]
                        max(ended - started, 0.0),
                        due,
                        ack=anyio.Event(),
                    )
                    report(failed)
                    await failed.ack.wait()
                    if not failed.recorded:
                        return  # the job stopped before it was written
                    await _sleep_until(due, clock)
                    await _check(lease)
                    number += 1
                    continue
            report(outcome)
            return
        report(result_outcome(op, value, codec, label))
        return


async def _check(lease: Lease | None) -> None:
    """A backoff may have outlasted the lease (a stalled process): confirm it,
    or raise :class:`~duron.LeaseLostError` (the job stops, nothing started)."""
    if lease is not None and not lease.lease_fresh():
        await lease.confirm_lease()


def _limit(
    options: EffectOptions, first_started: float, now: float, name: str, number: int
) -> tuple[float | None, str]:
    """Seconds this attempt may run (``None``: no limit), and what to say when
    it runs out."""
    cut: float | None = options.timeout
    reason = f"{name} timed out after {cut:g} s (attempt {number})" if cut else ""
    total = options.total_timeout
    if total is not None:
        left = first_started + total - now
        if cut is None or left < cut:
            cut = max(left, 0.0)
            reason = (
                f"{name} ran out of its total_timeout of {total:g} s (attempt {number})"
            )
    return cut, reason


async def _attempt(op: Op, cut: float | None, reason: str) -> Any:
    """One run of ``op``'s effect, cancelled after ``cut`` seconds (then a
    ``TimeoutError`` saying ``reason``)."""
    spec = op.spec
    if cut is None:
        return await _call(spec, op, abandon=False)
    with anyio.CancelScope(deadline=anyio.current_time() + cut) as scope:
        try:
            return await _call(spec, op, abandon=True)
        except Exception as exc:
            if not scope.cancel_called:
                raise
            # Raised while being cut short (an effect turning its cancellation
            # into an error of its own): the timeout is what happened.
            raise TimeoutError(reason) from exc
    raise TimeoutError(reason)


async def _call(spec: Any, op: Op, *, abandon: bool) -> Any:
    if spec.kind == "async":
        return await spec.fn(*op.args, **op.kwargs)
    if spec.kind == "sync":
        return await anyio.to_thread.run_sync(
            functools.partial(spec.fn, *op.args, **op.kwargs),
            abandon_on_cancel=abandon,
        )
    value = spec.fn(*op.args, **op.kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


async def _sleep_until(due: float, clock: Callable[[], float]) -> None:
    """Wait until the job's clock reads ``due`` (a restarted job: what is left)."""
    delay = due - clock()
    if delay > 0:
        await anyio.sleep(delay)
