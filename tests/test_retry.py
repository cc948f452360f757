"""Retry policies, timeouts and idempotency keys of effects, on a file log and in a
SQLite job store.

An effect call stays one operation whatever its retry policy does: each failed
attempt that is tried again is an ``attempt`` entry of that operation, the call's
end its ``done`` entry. Long backoffs are tested without waiting for them: the
host clock given to the job (``fn.invoke(storage, clock=...)``) is moved forward
while the job is stopped, as if the machine had been down, and only what is left
is really waited for.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

import duron
from duron._entries import Entry, JobStarted, OpAttempted, OpCompleted, OpStarted
from duron._identity import JobIdentity, operation_key
from duron._log import decode_entry, encode_entry
from duron.contrib.storage import FileLogStorage, MemoryLogStorage, SQLiteStore
from duron.testing import verify_async

pytestmark = pytest.mark.anyio

Logs = Callable[[str], duron.LogStorage]


class HostClock:
    """The host clock as the job sees it: real time plus a shift."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


@pytest.fixture(params=["file", "sqlite"])
async def logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Logs]:
    """A fresh job log by name: a JSONL file, or a job of a SQLite store."""
    if request.param == "file":
        yield lambda name: FileLogStorage(tmp_path / f"{name}.jsonl")
        return
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        yield store.log
    finally:
        await store.close()


async def entries(storage: duron.LogStorage) -> list[Entry]:
    return [
        decode_entry(raw, job=storage.label, offset=offset)
        async for offset, raw in storage.read()
    ]


async def attempts_in(storage: duron.LogStorage) -> list[OpAttempted]:
    return [e for e in await entries(storage) if isinstance(e, OpAttempted)]


async def run(
    dfn: duron.DurableFn[..., Any],
    storage: duron.LogStorage,
    *args: Any,
    clock: Callable[[], float] | None = None,
) -> Any:
    with anyio.fail_after(20):
        async with dfn.invoke(storage, clock=clock) as job:
            await job.start(*args)
            return await job.wait()


def fast(attempts: int | None = 3, **kw: Any) -> duron.RetryPolicy:
    """A policy whose waits are short enough to be waited for in a test."""
    kw.setdefault("initial_interval", 0.01)
    kw.setdefault("jitter", 0.0)
    return duron.RetryPolicy(max_attempts=attempts, **kw)


# -- effects: each records its attempts --------------------------------------------

calls: list[duron.Operation] = []


class PaymentDown(Exception):
    pass


@duron.effect(retry=fast(5))
async def charge(order: int, fail_first: int) -> str:
    op = duron.current_operation()
    calls.append(op)
    if op.attempt <= fail_first:
        raise PaymentDown(f"down at attempt {op.attempt}")
    return f"paid {order}"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    calls.clear()


@duron.durable
async def checkout(ctx: duron.Context, order: int, fail_first: int) -> str:
    return await ctx.run(charge, order, fail_first)


@duron.durable
async def checkout_reporting(ctx: duron.Context, order: int, fail_first: int) -> str:
    try:
        return await ctx.run(charge, order, fail_first)
    except PaymentDown as exc:
        tried = duron.failed_attempts(exc)
        return f"gave up: {exc} after " + ", ".join(
            f"#{a.number} {a.error_type.rpartition('.')[2]}: {a.message}" for a in tried
        )


# -- attempts, replay and the log --------------------------------------------------


@pytest.mark.both_hosts
async def test_a_failing_effect_is_tried_again_as_one_operation(logs: Logs) -> None:
    storage = logs("order-1")
    assert await run(checkout, storage, 1, 2) == "paid 1"
    assert [op.attempt for op in calls] == [1, 2, 3]
    log = await entries(storage)
    assert [e.type for e in log] == [
        "job",
        "start",
        "attempt",
        "attempt",
        "done",
        "end",
    ]
    first, second = (e for e in log if isinstance(e, OpAttempted))
    assert (first.id, first.attempt, second.attempt) == (0, 1, 2)
    assert (first.error.type, first.error.message) == (
        f"{__name__}.PaymentDown",
        "down at attempt 1",
    )
    # Each wait is recorded as when the next attempt was due, and kept.
    assert first.retry_at <= second.t - second.duration + 0.05
    done = next(e for e in log if isinstance(e, OpCompleted))
    assert done.t >= second.retry_at
    # Replayed: the recorded result, no effect run, no wait.
    calls.clear()
    assert await run(checkout, storage, 1, 2) == "paid 1"
    assert calls == []


async def test_an_exhausted_policy_raises_the_last_error_with_the_attempts(
    logs: Logs,
) -> None:
    storage = logs("order-2")
    expected = (
        "gave up: down at attempt 5 after #1 PaymentDown: down at attempt 1, "
        "#2 PaymentDown: down at attempt 2, #3 PaymentDown: down at attempt 3, "
        "#4 PaymentDown: down at attempt 4"
    )
    assert await run(checkout_reporting, storage, 2, 99) == expected
    assert len(calls) == 5
    assert len(await attempts_in(storage)) == 4
    calls.clear()
    assert await run(checkout_reporting, storage, 2, 99) == expected  # replayed
    assert calls == []


async def test_without_a_policy_an_effect_runs_once() -> None:
    @duron.effect
    async def once() -> None:
        calls.append(duron.current_operation())
        raise PaymentDown("no retry")

    @duron.durable
    async def flow(ctx: duron.Context) -> None:
        await ctx.run(once)

    storage = MemoryLogStorage()
    with pytest.raises(PaymentDown, match=r"^no retry$"):
        await run(flow, storage)
    assert len(calls) == 1
    assert [e.type for e in storage.entries()] == ["job", "done", "end"]


def test_delays_grow_by_the_backoff_up_to_the_cap_with_deterministic_jitter() -> None:
    policy = duron.RetryPolicy(
        initial_interval=1.0, backoff=3.0, max_interval=20.0, jitter=0.0
    )
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 20.0, 20.0]
    jittery = duron.RetryPolicy(initial_interval=10.0, backoff=1.0, jitter=0.5)
    drawn = [jittery.delay(1, f"seed:{op}") for op in range(20)]
    assert all(5.0 <= d <= 15.0 for d in drawn)
    assert len(set(drawn)) == 20  # each operation draws its own
    assert drawn == [jittery.delay(1, f"seed:{op}") for op in range(20)]  # and again


def test_policies_allow_attempts_by_count_and_by_elapsed_time() -> None:
    policy = duron.RetryPolicy(max_attempts=3, max_elapsed=10.0)
    assert policy.allows(3, 100.0, 105.0)
    assert not policy.allows(4, 100.0, 105.0)
    assert not policy.allows(2, 100.0, 110.5)
    unlimited = duron.RetryPolicy(max_attempts=None)
    assert unlimited.allows(10_000, 0.0, 1e9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_attempts": 0},
            "RetryPolicy(max_attempts=...): max_attempts must be an integer >= 1 "
            "or None, not 0",
        ),
        (
            {"max_attempts": True},
            "RetryPolicy(max_attempts=...): max_attempts must be an integer >= 1 "
            "or None, not True",
        ),
        (
            {"initial_interval": -1},
            "RetryPolicy(initial_interval=...): initial_interval must be a number "
            "of seconds >= 0, not -1",
        ),
        (
            {"backoff": 0.5},
            "RetryPolicy(backoff=...): backoff must be a number >= 1, not 0.5",
        ),
        (
            {"max_interval": float("inf")},
            "RetryPolicy(max_interval=...): max_interval must be a number of "
            "seconds >= 0, not inf",
        ),
        (
            {"jitter": 2},
            "RetryPolicy(jitter=...): jitter must be a fraction from 0 to 1, not 2",
        ),
        (
            {"non_retryable": [ValueError]},
            "RetryPolicy(non_retryable=...): non_retryable must be a tuple of "
            "exception types, not [<class 'ValueError'>]",
        ),
        (
            {"initial_interval": 600, "max_interval": 60},
            "RetryPolicy(initial_interval=600, max_interval=60): the first interval "
            "is longer than the longest allowed; raise max_interval (or set it to "
            "None)",
        ),
        (
            {"max_elapsed": "1h"},
            "RetryPolicy(max_elapsed=...): max_elapsed must be a number of seconds "
            ">= 0, not '1h'",
        ),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        duron.RetryPolicy(**kwargs)


# -- what is never retried -----------------------------------------------------------


class Declined(duron.NonRetryableError):
    pass


@pytest.mark.parametrize(
    ("error", "policy"),
    [
        (Declined("card declined"), fast()),
        (duron.NonRetryableError("give up"), fast()),
        (ValueError("bad amount"), fast(non_retryable=(ValueError,))),
        (duron.UsageError("misused"), fast()),
        (duron.PayloadDecodeError(what="reply", type_name="Reply", detail="x"), fast()),
    ],
    ids=["subclass", "NonRetryableError", "listed", "UsageError", "PayloadError"],
)
async def test_errors_that_cannot_succeed_again_are_not_retried(
    error: Exception, policy: duron.RetryPolicy
) -> None:
    @duron.effect(retry=policy)
    async def refuse() -> None:
        calls.append(duron.current_operation())
        raise error

    @duron.durable
    async def flow(ctx: duron.Context) -> None:
        await ctx.run(refuse)

    storage = MemoryLogStorage()
    # Duron's own errors come back as EffectError (they do not rebuild from args).
    with pytest.raises((type(error), duron.EffectError)) as info:
        await run(flow, storage)
    assert str(info.value).endswith(str(error))
    assert len(calls) == 1
    # One done entry holds the error; Duron's own errors are not the job's end.
    assert [e.type for e in storage.entries()][:2] == ["job", "done"]
    assert not [e for e in storage.entries() if isinstance(e, OpAttempted)]


async def test_a_result_that_cannot_be_recorded_fails_the_job_without_retrying() -> (
    None
):
    @duron.effect(retry=fast())
    async def price() -> Decimal:
        calls.append(duron.current_operation())
        return "not a number"  # type: ignore[return-value]

    @duron.durable
    async def flow(ctx: duron.Context) -> Decimal:
        return await ctx.run(price)

    with pytest.raises(duron.PayloadEncodeError, match="result of effect"):
        await run(flow, MemoryLogStorage())
    assert len(calls) == 1


# -- a backoff survives a restart ------------------------------------------------------


@duron.effect(
    retry=duron.RetryPolicy(
        max_attempts=3, initial_interval=600.0, max_interval=None, jitter=0.0
    )
)
async def slow_bank(order: int) -> str:
    op = duron.current_operation()
    calls.append(op)
    if op.attempt == 1:
        raise PaymentDown("bank down")
    return f"paid {order} at attempt {op.attempt}"


@duron.durable
async def patient_checkout(ctx: duron.Context, order: int) -> str:
    return await ctx.run(slow_bank, order)


async def wait_for_attempt_entry(storage: duron.LogStorage) -> OpAttempted:
    with anyio.fail_after(10):
        while True:
            found = await attempts_in(storage)
            if found:
                return found[0]
            await anyio.sleep(0.01)


async def test_a_job_restarted_mid_backoff_waits_only_what_is_left(
    logs: Logs,
) -> None:
    clock = HostClock()
    storage = logs("order-3")
    async with patient_checkout.invoke(storage, clock=clock) as job:
        await job.start(3)
        attempt = await wait_for_attempt_entry(storage)
        # Stopped in the middle of a 10-minute backoff.
    assert attempt.retry_at - attempt.t == pytest.approx(600.0, abs=1.0)
    assert len(calls) == 1
    # The machine was down for all but half a second of it.
    clock.shift = attempt.retry_at - time.time() - 0.5
    resumed_at = clock()
    with anyio.fail_after(20):
        async with patient_checkout.invoke(logs("order-3"), clock=clock) as job:
            await job.resume()
            assert await job.wait() == "paid 3 at attempt 2"
    assert [op.attempt for op in calls] == [1, 2]
    log = await entries(storage)
    done = next(e for e in log if isinstance(e, OpCompleted))
    # The second attempt ran once its recorded due time had come, not 10 min later.
    assert attempt.retry_at <= done.t < resumed_at + 10
    assert len([e for e in log if isinstance(e, OpAttempted)]) == 1
    # A replay of the whole log waits for nothing.
    calls.clear()
    assert await run(patient_checkout, logs("order-3"), 3) == "paid 3 at attempt 2"
    assert calls == []


async def test_a_changed_policy_replays_the_recorded_attempts() -> None:
    storage = MemoryLogStorage()
    assert await run(checkout, storage, 4, 2) == "paid 4"
    recorded = storage.entries()

    @duron.effect(name=charge.__qualname__, retry=fast(1))
    async def charge_once(order: int, fail_first: int) -> str:
        raise AssertionError("replay runs no effect")

    @duron.durable(name=checkout.name)
    async def checkout_v2(ctx: duron.Context, order: int, fail_first: int) -> str:
        return await ctx.run(charge_once, order, fail_first)

    assert await run(checkout_v2, MemoryLogStorage(recorded_lines(recorded)), 4, 2) == (
        "paid 4"
    )
    report = await verify_async(checkout_v2, MemoryLogStorage(recorded_lines(recorded)))
    assert report.status == "ok"


def recorded_lines(log: list[Entry]) -> list[bytes]:
    return [encode_entry(e) for e in log]


async def test_a_policy_lowered_while_a_job_waited_ends_the_call_with_its_last_error(
    logs: Logs,
) -> None:
    clock = HostClock()
    storage = logs("order-5")
    async with patient_checkout.invoke(storage, clock=clock) as job:
        await job.start(5)
        await wait_for_attempt_entry(storage)

    @duron.effect(name=slow_bank.__qualname__)  # no retry policy any more
    async def bank_without_retries(order: int) -> str:
        raise AssertionError("no attempt is left to run")

    @duron.durable(name=patient_checkout.name)
    async def patient_v2(ctx: duron.Context, order: int) -> str:
        try:
            return await ctx.run(bank_without_retries, order)
        except PaymentDown as exc:
            numbers = [a.number for a in duron.failed_attempts(exc)]
            return f"{exc} (recorded attempts: {numbers})"

    with anyio.fail_after(20):
        async with patient_v2.invoke(logs("order-5"), clock=clock) as job:
            await job.resume()
            # At once: no attempt is due any more, so none is waited for.
            assert await job.wait() == "bank down (recorded attempts: [1])"
    assert len(calls) == 1


# -- timeouts ----------------------------------------------------------------------------


@pytest.mark.both_hosts
async def test_an_async_attempt_past_its_timeout_is_cancelled_and_retried() -> None:
    cancelled: list[int] = []

    @duron.effect(timeout=0.05, retry=fast(2))
    async def hang() -> str:
        op = duron.current_operation()
        calls.append(op)
        if op.attempt == 2:
            return "answered"
        try:
            await anyio.sleep(30)
        except BaseException:
            cancelled.append(op.attempt)
            raise
        return "too late"

    @duron.durable
    async def flow(ctx: duron.Context) -> str:
        return await ctx.run(hang)

    storage = MemoryLogStorage()
    assert await run(flow, storage) == "answered"
    assert cancelled == [1]
    (attempt,) = [e for e in storage.entries() if isinstance(e, OpAttempted)]
    assert (attempt.error.type, attempt.error.message) == (
        "builtins.TimeoutError",
        f"{hang.__qualname__} timed out after 0.05 s (attempt 1)",
    )
    assert attempt.duration >= 0.04


@pytest.mark.both_hosts
async def test_a_sync_attempt_past_its_timeout_is_abandoned_and_its_result_dropped() -> (
    None
):
    release = threading.Event()
    finished: list[str] = []

    @duron.effect(timeout=0.05)
    def blocking() -> str:
        release.wait(10)
        finished.append("thread ran to its end")
        return "discarded"

    @duron.durable
    async def flow(ctx: duron.Context) -> str:
        try:
            return await ctx.run(blocking)
        except TimeoutError as exc:
            return f"timed out: {exc}"

    storage = MemoryLogStorage()
    try:
        result = await run(flow, storage)
    finally:
        release.set()
    assert (
        result
        == f"timed out: {blocking.__qualname__} timed out after 0.05 s (attempt 1)"
    )
    with anyio.fail_after(10):
        while not finished:
            await anyio.sleep(0.01)
    done = next(e for e in storage.entries() if isinstance(e, OpCompleted))
    assert done.error is not None
    assert done.error.type == "builtins.TimeoutError"


async def test_a_total_timeout_stops_the_retries_and_cuts_the_last_attempt() -> None:
    @duron.effect(retry=fast(None, initial_interval=0.05), total_timeout=0.3)
    async def stalls() -> str:
        op = duron.current_operation()
        calls.append(op)
        if op.attempt < 3:
            raise PaymentDown(f"down {op.attempt}")
        await anyio.sleep(30)
        return "never"

    @duron.durable
    async def flow(ctx: duron.Context) -> tuple[str, list[int]]:
        try:
            return await ctx.run(stalls), []
        except TimeoutError as exc:
            return str(exc), [a.number for a in duron.failed_attempts(exc)]

    storage = MemoryLogStorage()
    assert await run(flow, storage) == (
        f"{stalls.__qualname__} ran out of its total_timeout of 0.3 s (attempt 3)",
        [1, 2],
    )
    log = storage.entries()
    start = next(e for e in log if isinstance(e, OpStarted))
    done = next(e for e in log if isinstance(e, OpCompleted))
    assert 0.25 <= done.t - start.t < 5


async def test_a_total_timeout_ends_retries_that_would_start_too_late() -> None:
    @duron.effect(retry=fast(None, initial_interval=0.2), total_timeout=0.3)
    async def down() -> str:
        calls.append(duron.current_operation())
        raise PaymentDown("still down")

    @duron.durable
    async def flow(ctx: duron.Context) -> tuple[str, int]:
        try:
            return await ctx.run(down), 0
        except PaymentDown as exc:
            return str(exc), len(duron.failed_attempts(exc))

    # 0.0 fails, 0.2 fails, 0.4 would be past the 0.3 s budget.
    assert await run(flow, MemoryLogStorage()) == ("still down", 1)
    assert len(calls) == 2


async def test_max_elapsed_ends_retries_but_not_the_running_attempt() -> None:
    @duron.effect(retry=fast(None, initial_interval=0.1, max_elapsed=0.15))
    async def down() -> str:
        calls.append(duron.current_operation())
        raise PaymentDown("still down")

    @duron.durable
    async def flow(ctx: duron.Context) -> str:
        return await ctx.run(down)

    with pytest.raises(PaymentDown):
        await run(flow, MemoryLogStorage())
    assert len(calls) == 2  # at 0.0 and 0.1; 0.2 would be past 0.15


# -- options of one call --------------------------------------------------------------


async def test_ctx_options_set_a_call_s_policy_over_the_effect_s_own() -> None:
    @duron.effect
    async def flaky() -> str:
        op = duron.current_operation()
        calls.append(op)
        if op.attempt < 2:
            raise PaymentDown("once")
        return "ok"

    @duron.durable
    async def flow(ctx: duron.Context) -> list[str]:
        out = [await ctx.options(retry=fast(2)).run(flaky)]
        try:
            await ctx.run(flaky)  # the effect's own: no retries
        except PaymentDown as exc:
            out.append(str(exc))
        return out

    assert await run(flow, MemoryLogStorage()) == ["ok", "once"]
    assert [op.attempt for op in calls] == [1, 2, 1]


async def test_bad_call_options_are_refused_naming_the_option() -> None:
    @duron.effect
    async def work() -> None: ...

    @duron.effect
    async def counter(state: int) -> AsyncIterator[int]:
        yield 1

    @duron.durable
    async def flow(ctx: duron.Context) -> list[str]:
        seen = []
        bad: list[dict[str, Any]] = [
            {"timeout": 0},
            {"retry": 3},
            {"total_timeout": float("nan")},
        ]
        for options in bad:
            try:
                ctx.options(**options)
            except duron.UsageError as exc:
                seen.append(str(exc))
        try:
            await ctx.options(timeout=1).run(counter, 0)
        except duron.UsageError as exc:
            seen.append(str(exc))
        return seen

    assert await run(flow, MemoryLogStorage()) == [
        "ctx.options(timeout=...): timeout must be a number of seconds > 0, not 0",
        "ctx.options(retry=...): retry must be a duron.RetryPolicy, not 3",
        "ctx.options(total_timeout=...): total_timeout must be a number of seconds "
        "> 0, not nan",
        f"ctx.options(): {counter.__qualname__} is a streaming effect; retries and "
        "timeouts apply to other effects only",
    ]
    with pytest.raises(
        duron.UsageError,
        match="^"
        + re.escape(
            "@duron.effect(timeout=...): timeout must be a number of seconds > 0, not -1"
        )
        + "$",
    ):
        duron.effect(timeout=-1)(work)


# -- identity --------------------------------------------------------------------------


@duron.effect(retry=fast(3))
async def keyed(tag: str) -> str:
    op = duron.current_operation()
    calls.append(op)
    if tag == "flaky" and op.attempt == 1:
        raise PaymentDown("once")
    return op.key


@duron.durable
async def two_keys(ctx: duron.Context) -> list[str]:
    return [ctx.job_id, await ctx.run(keyed, "flaky"), await ctx.run(keyed, "steady")]


async def test_operation_keys_are_stable_per_operation_and_unique_per_job(
    logs: Logs,
) -> None:
    job_id, first, second = await run(two_keys, logs("keys-a"))
    assert job_id == logs("keys-a").label
    assert re.fullmatch("[0-9a-f]{32}", first)
    assert first != second
    # Across attempts of one operation the key stays; the position and job say who.
    assert [(op.position, op.attempt, op.key) for op in calls] == [
        (0, 1, first),
        (0, 2, first),
        (1, 1, second),
    ]
    assert {op.job_id for op in calls} == {job_id}
    assert {op.name for op in calls} == {keyed.__qualname__}
    # Replay hands back what was recorded; another job gets other keys.
    assert await run(two_keys, logs("keys-a")) == [job_id, first, second]
    _, other_first, other_second = await run(two_keys, logs("keys-b"))
    assert {other_first, other_second}.isdisjoint({first, second})


async def test_a_log_of_the_same_name_started_again_gets_other_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "same.jsonl"
    _, first, _ = await run(two_keys, FileLogStorage(path))
    path.unlink()
    _, again, _ = await run(two_keys, FileLogStorage(path))
    assert again != first  # a new job entry, a new seed


async def test_current_operation_outside_an_effect_says_where_to_call_it() -> None:
    with pytest.raises(
        duron.UsageError,
        match="^"
        + re.escape(
            "duron.current_operation() was called outside an effect; call it "
            "inside an effect that durable code runs with ctx.run"
        )
        + "$",
    ):
        duron.current_operation()


@pytest.mark.both_hosts
async def test_every_kind_of_effect_sees_its_operation() -> None:
    @duron.effect
    def in_thread() -> str:
        return duron.current_operation().name

    @duron.effect
    async def plain() -> str:
        return duron.current_operation().name

    @duron.effect
    async def streaming(state: int) -> AsyncIterator[int]:
        assert duron.current_operation().position == 2
        yield 1

    @duron.durable
    async def flow(ctx: duron.Context) -> list[Any]:
        return [
            await ctx.run(in_thread),
            await ctx.run(plain),
            await ctx.run(streaming, 0),
            await ctx.run(lambda: anyio.sleep(0)),
        ]

    assert await run(flow, MemoryLogStorage()) == [
        in_thread.__qualname__,
        plain.__qualname__,
        1,
        None,
    ]


def test_a_charge_killed_mid_way_and_resumed_is_made_once(tmp_path: Path) -> None:
    """examples/payments.py: SIGKILLed after the bank charged, before the answer
    reached the log; resumed in another process, with the same key."""
    example = Path(__file__).parent.parent / "examples" / "payments.py"
    proc = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the log holds: ['job', 'start', 'attempt']" in proc.stdout
    with sqlite3.connect(tmp_path / "bank.db") as bank:
        charges = bank.execute("SELECT key, order_id, cents FROM charges").fetchall()
        requests = [k for (k,) in bank.execute("SELECT key FROM requests")]
    # The 503, the charge whose answer was lost, the same charge again: one key.
    (job, *_) = [
        decode_entry(line, job="checkout.jsonl", offset=0)
        for line in (tmp_path / "checkout.jsonl").read_bytes().splitlines()
    ]
    assert isinstance(job, JobStarted)
    key = operation_key(JobIdentity("checkout.jsonl", job.seed), 0)
    assert charges == [(key, 42, 1999)]
    assert requests == [key, key, key]


@pytest.mark.both_hosts
async def test_concurrent_effects_each_see_their_own_operation_after_waiting() -> None:
    @duron.effect
    async def where(delay: float) -> tuple[int, int]:
        before = duron.current_operation().position  # in its first step
        await anyio.sleep(delay)
        return before, duron.current_operation().position  # after waiting

    @duron.durable
    async def flow(ctx: duron.Context) -> list[tuple[int, int]]:
        return list(
            await asyncio.gather(
                *(ctx.run(where, d) for d in (0.05, 0.0, 0.03, 0.01, 0.02))
            )
        )

    assert await run(flow, MemoryLogStorage()) == [(i, i) for i in range(5)]


class Gateway:
    def __init__(self) -> None:
        self.requests = 0

    @duron.effect(retry=fast(3))
    async def send(self, text: str) -> str:
        self.requests += 1
        if self.requests == 1:
            raise PaymentDown("busy")
        return f"sent {text} at attempt {duron.current_operation().attempt}"


async def test_an_effect_defined_as_a_method_keeps_its_policy() -> None:
    gateway = Gateway()

    @duron.durable
    async def flow(ctx: duron.Context) -> str:
        return await ctx.run(gateway.send, "hi")

    assert await run(flow, MemoryLogStorage()) == "sent hi at attempt 2"
    assert gateway.requests == 2
