"""Queues, priorities and delayed starts on every SQL store (the ``backend``
fixture): what a submit records, the order and limits of claims, workers that
serve some queues, and a clear error for every bad option."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import anyio
import pytest

import duron

if TYPE_CHECKING:
    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio


@duron.durable
async def job(ctx: duron.Context, n: int) -> int:
    return n


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.store()


async def claimed(store: Store, limit: int = 10, **kw: object) -> list[str]:
    """The ids a claim took, sorted (a claim returns them oldest first)."""
    return sorted(c.job_id for c in await store.claim(limit, **kw))  # type: ignore[arg-type]


async def test_a_submit_records_queue_priority_and_start_time(store: Store) -> None:
    at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    await store.submit(job.options(job_id="a", queue="mail", priority=7), 1)
    await store.submit(job.options(job_id="b", start_at=at), 2)
    await store.submit(job.options(job_id="c"), 3)
    a, b, c = [await store.get(i) for i in "abc"]
    assert (a.queue, a.priority, a.wake_at) == ("mail", 7, None)
    assert (b.queue, b.priority, b.wake_at) == ("default", 0, at)
    assert (c.queue, c.priority, c.wake_at) == ("default", 0, None)
    assert str(b) == "b pending job(n=2) (starts at 2031-01-02T03:04:05+00:00)"
    assert [j.id for j in await store.list_jobs(queue="mail")] == ["a"]
    assert [j.id for j in await store.list_jobs(queue=["mail", "default"])] == [
        "a",
        "b",
        "c",
    ]
    assert (await store.count_jobs(queue="default"))["pending"] == 2


async def test_higher_priority_starts_first_then_the_oldest(store: Store) -> None:
    for name, priority in [("low", -1), ("mid-1", 0), ("high", 5), ("mid-2", 0)]:
        await store.submit(job.options(job_id=name, priority=priority), 0)
    assert await claimed(store, 2) == ["high", "mid-1"]
    assert await claimed(store, 5) == ["low", "mid-2"]


async def test_a_delayed_job_starts_at_its_time_not_before(store: Store) -> None:
    await store.submit(job.options(job_id="later", delay=0.6), 0)
    await store.submit(
        job.options(job_id="past", start_at=datetime.now(timezone.utc)), 0
    )
    assert await claimed(store) == ["past"]
    await anyio.sleep(0.7)
    assert await claimed(store) == ["later"]


async def test_a_concurrency_limit_counts_running_jobs_of_the_queue(
    store: Store, backend: Backend
) -> None:
    await store.set_queue(duron.Queue("q", concurrency=2))
    for n in range(4):
        await store.submit(job.options(job_id=f"q{n}", queue="q"), n)
    await store.submit(job.options(job_id="free"), 0)
    other = await backend.store()  # another worker: the limit is the store's
    assert await claimed(store) == ["free", "q0", "q1"]
    assert await claimed(other) == []
    # A running job whose lease ran out still holds its slot until taken back,
    # and taking it back needs none.
    backend.expire("q0")
    assert await claimed(other) == ["q0"]
    await store.set_queue(duron.Queue("q", concurrency=3))
    assert await claimed(other) == ["q2"]
    await store.set_queue(duron.Queue("q"))  # no limit any more
    assert await claimed(other) == ["q3"]
    assert await store.queues() == [duron.Queue("q")]
    await other.close()


async def test_a_rate_limit_counts_first_starts_only(store: Store) -> None:
    await store.set_queue(
        duron.Queue("r", rate_limit=duron.RateLimit(2, per=timedelta(seconds=0.8)))
    )
    for n in range(3):
        await store.submit(job.options(job_id=f"r{n}", queue="r"), n)
    assert await claimed(store) == ["r0", "r1"]
    assert await claimed(store) == []
    await anyio.sleep(0.9)
    assert await claimed(store) == ["r2"]
    assert await store.queues() == [
        duron.Queue("r", rate_limit=duron.RateLimit(2, per=0.8))
    ]


async def test_a_claim_takes_only_the_queues_asked_for(store: Store) -> None:
    await store.submit(job.options(job_id="m", queue="mail"), 0)
    await store.submit(job.options(job_id="g", queue="gpu"), 0)
    assert await claimed(store, queues=["gpu"]) == ["g"]
    assert await claimed(store, queues=[]) == []
    assert await claimed(store, queues=["mail", "x"]) == ["m"]


async def test_a_worker_serves_its_queues_and_sets_the_limits_it_is_given(
    store: Store,
) -> None:
    await store.submit(job.options(job_id="m", queue="mail"), 1)
    await store.submit(job.options(job_id="g", queue="gpu"), 2)
    mail = duron.Queue("mail", concurrency=3)
    async with duron.Worker(store, [job], queues=[mail], poll_interval=0.05) as w:
        assert w.queues == ("mail",)
        assert await store.result("m") == 1
        await w.wait_idle()
        assert (await store.get("g")).status == "pending"
    assert await store.queues() == [mail]


def test_bad_queue_options_are_named() -> None:
    cases: list[tuple[dict[str, object], str]] = [
        (
            {"queue": ""},
            "job.options(queue=...): queue must be a non-empty string of at most "
            "255 printable characters, without leading or trailing spaces, not ''",
        ),
        (
            {"priority": 1.5},
            "job.options(priority=...): priority must be a whole number from "
            "-2147483648 to 2147483647, not 1.5",
        ),
        (
            {"start_at": datetime(2030, 1, 1)},
            "job.options(start_at=...): start_at must be a timezone-aware "
            "datetime, not datetime.datetime(2030, 1, 1, 0, 0)",
        ),
        (
            {"delay": -1},
            "job.options(delay=...): delay must be a duration >= 0 (a timedelta "
            "or seconds), not -1",
        ),
        (
            {"delay": 1, "start_at": datetime.now(timezone.utc)},
            "job.options() takes start_at or delay, not both: start_at is a time, "
            "delay a duration from the submission",
        ),
    ]
    for options, message in cases:
        with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
            job.options(**options)  # type: ignore[arg-type]
    # A later one replaces the other.
    at = datetime.now(timezone.utc)
    later = job.options(delay=5).options(start_at=at).call_options
    assert (later.start_at, later.delay) == (at, None)


def test_bad_queues_and_limits_are_named() -> None:
    cases: list[tuple[object, str]] = [
        (
            lambda: duron.Queue(" q"),
            "a queue name is a non-empty string of at "
            "most 255 printable characters, without leading or trailing spaces, "
            "not ' q'",
        ),
        (
            lambda: duron.Queue("q", concurrency=0),
            "Queue(concurrency=...) takes a whole number >= 1 or None, not 0",
        ),
        (
            lambda: duron.Queue("q", rate_limit=5),  # type: ignore[arg-type]
            "Queue(rate_limit=...) takes a duron.RateLimit(starts, per) or None, not 5",
        ),
        (
            lambda: duron.RateLimit(0, per=1),
            "RateLimit(starts=...) takes a whole number >= 1, not 0",
        ),
        (
            lambda: duron.RateLimit(1, per=0),
            "RateLimit(per=...) takes seconds > 0 or a timedelta, not 0",
        ),
    ]
    for make, message in cases:
        with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
            make()  # type: ignore[operator]


async def test_a_worker_s_queues_must_be_a_list(store: Store) -> None:
    message = (
        "Worker(queues=...) takes a list of queue names or duron.Queue objects, "
        "not 'mail'; write ['mail']"
    )
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        duron.Worker(store, [job], queues="mail")
    message = "set_queue() takes a duron.Queue(name, concurrency=..., rate_limit=...), not 'q'"
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        await store.set_queue("q")  # type: ignore[arg-type]
