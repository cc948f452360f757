"""Searching a job store: ``list_jobs`` filters (function, status, id prefix,
created and updated times), order, cursor paging stable under inserts,
``count_jobs`` per status, ``function_activity``, and a clear error for every bad
argument. On every SQL store (the ``backend`` fixture)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

import duron
from duron._job_query import encode_cursor

if TYPE_CHECKING:
    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=timezone.utc)


@duron.effect
async def step(i: int) -> int:
    return i


@duron.durable
async def email(ctx: duron.Context, n: int) -> int:
    return await ctx.run(step, n)


@duron.durable
async def report(ctx: duron.Context, n: int) -> int:
    return n


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.store()


async def fill(store: Store, backend: Backend) -> None:
    """Six jobs, created a second apart in this order (updated 100 s later):

    ``e-1`` email pending, ``r-1`` report completed, ``e-2`` email completed,
    ``x_%`` report pending, ``e-3`` email pending, ``r-2`` report pending.
    """
    made = [
        ("e-1", email),
        ("r-1", report),
        ("e-2", email),
        ("x_%", report),
        ("e-3", email),
        ("r-2", report),
    ]
    for i, (job_id, fn) in enumerate(made):
        await store.submit(fn.options(job_id=job_id), i)
    for job_id, fn in (("r-1", report), ("e-2", email)):
        async with fn.invoke(store.log(job_id)) as job:
            await job.resume()
            await job.wait()
    for i, (job_id, _) in enumerate(made):
        backend.set_times(job_id, T0 + i, T0 + 100 + i)


def ids(jobs: list[duron.JobInfo]) -> list[str]:
    return [j.id for j in jobs]


async def test_filters(store: Store, backend: Backend) -> None:
    await fill(store, backend)
    assert ids(await store.list_jobs()) == ["e-1", "r-1", "e-2", "x_%", "e-3", "r-2"]
    assert ids(await store.list_jobs(function="email")) == ["e-1", "e-2", "e-3"]
    assert ids(await store.list_jobs(function=report)) == ["r-1", "x_%", "r-2"]
    assert ids(await store.list_jobs(function=[email, "report"])) == ids(
        await store.list_jobs()
    )
    assert ids(await store.list_jobs(function="nobody")) == []
    assert ids(await store.list_jobs("pending", function=email)) == ["e-1", "e-3"]
    assert ids(await store.list_jobs(["completed"])) == ["r-1", "e-2"]
    assert ids(await store.list_jobs(id_prefix="e-")) == ["e-1", "e-2", "e-3"]
    # The prefix is taken as written: no wildcard.
    assert ids(await store.list_jobs(id_prefix="x_")) == ["x_%"]
    assert ids(await store.list_jobs(id_prefix="x%")) == []
    assert ids(await store.list_jobs(id_prefix="E-")) == []
    assert ids(await store.list_jobs(created_after=at(1), created_before=at(4))) == [
        "e-2",
        "x_%",
    ]
    assert ids(await store.list_jobs(updated_after=at(104))) == ["r-2"]
    assert ids(await store.list_jobs(updated_before=at(101.5))) == ["e-1", "r-1"]
    # Any time zone: the same instants.
    plus2 = timezone(timedelta(hours=2))
    assert ids(await store.list_jobs(created_before=at(1.5).astimezone(plus2))) == [
        "e-1",
        "r-1",
    ]
    assert ids(
        await store.list_jobs(
            "pending", function="report", id_prefix="r", created_after=at(0)
        )
    ) == ["r-2"]


async def test_newest_first(store: Store, backend: Backend) -> None:
    await fill(store, backend)
    assert ids(await store.list_jobs(newest_first=True, function=email)) == [
        "e-3",
        "e-2",
        "e-1",
    ]
    jobs = await store.list_jobs(newest_first=True, limit=2)
    assert ids(jobs) == ["r-2", "e-3"]


async def pages(store: Store, size: int, **filters: Any) -> list[list[str]]:
    out: list[list[str]] = []
    cursor = None
    while True:
        page = await store.list_jobs(limit=size, cursor=cursor, **filters)
        out.append(ids(page))
        cursor = page.next_cursor
        if cursor is None:
            return out


async def test_pages_walk_every_job_once_in_either_order(
    store: Store, backend: Backend
) -> None:
    await fill(store, backend)
    assert await pages(store, 4) == [["e-1", "r-1", "e-2", "x_%"], ["e-3", "r-2"]]
    assert await pages(store, 2, newest_first=True) == [
        ["r-2", "e-3"],
        ["x_%", "e-2"],
        ["r-1", "e-1"],
    ]
    assert await pages(store, 1, function="email", status="pending") == [
        ["e-1"],
        ["e-3"],
    ]
    # A page that holds the last job says there is no next one.
    assert await pages(store, 3) == [["e-1", "r-1", "e-2"], ["x_%", "e-3", "r-2"]]
    everything = await store.list_jobs()
    assert everything.next_cursor is None
    assert everything == list(everything)  # a list, like before


async def test_jobs_created_at_the_same_time_are_ordered_by_id(
    store: Store, backend: Backend
) -> None:
    for job_id in ("b", "c", "a", "d"):
        await store.submit(report.options(job_id=job_id), 1)
        backend.set_times(job_id, T0, T0)
    assert await pages(store, 3) == [["a", "b", "c"], ["d"]]
    assert await pages(store, 3, newest_first=True) == [["d", "c", "b"], ["a"]]


async def test_paging_is_stable_while_jobs_are_added_and_removed(
    store: Store, backend: Backend
) -> None:
    await fill(store, backend)
    first = await store.list_jobs(limit=2)
    newest = await store.list_jobs(limit=2, newest_first=True)
    assert (ids(first), ids(newest)) == (["e-1", "r-1"], ["r-2", "e-3"])
    # Meanwhile: new jobs (created later), and an old one pruned.
    await store.submit(report.options(job_id="a-new"), 9)
    await store.submit(report.options(job_id="z-new"), 9)
    await store.prune(status="completed", older_than=timedelta(0))
    rest = await store.list_jobs(cursor=first.next_cursor)
    assert ids(rest) == ["x_%", "e-3", "r-2", "a-new", "z-new"]
    rest = await store.list_jobs(cursor=newest.next_cursor, newest_first=True)
    assert ids(rest) == ["x_%", "e-1"]


async def test_count_jobs(store: Store, backend: Backend) -> None:
    assert await store.count_jobs() == {
        "pending": 0,
        "running": 0,
        "suspended": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    await fill(store, backend)
    await store.cancel("x_%")
    assert await store.count_jobs() == {
        "pending": 3,
        "running": 0,
        "suspended": 0,
        "completed": 2,
        "failed": 0,
        "cancelled": 1,
    }
    assert await store.count_jobs(function=report) == {
        "pending": 1,
        "running": 0,
        "suspended": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 1,
    }
    assert await store.count_jobs(["completed", "pending"], id_prefix="e") == {
        "completed": 1,
        "pending": 2,
    }
    assert await store.count_jobs(created_after=at(2.5)) == {
        "pending": 2,
        "running": 0,
        "suspended": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
    }


async def test_function_activity(store: Store, backend: Backend) -> None:
    assert await store.function_activity([]) == {}
    await fill(store, backend)
    seen = await store.function_activity([email, "report", "nobody"])
    # The newest email job that ran is e-2 (completed); none of them runs now.
    assert seen == {
        "email": duron.FunctionActivity("email", 0, at(102)),
        "report": duron.FunctionActivity("report", 0, at(101)),
        "nobody": duron.FunctionActivity("nobody", 0, None),
    }
    # A job whose writer holds a live lease: its function runs now.
    async with email.invoke(store.log("e-1")):
        (running,) = (await store.function_activity(["email"])).values()
        assert running.running == 1
        backend.expire("e-1")  # its writer stalled past its lease: it runs no more
        (running,) = (await store.function_activity(["email"])).values()
        assert running.running == 0


async def test_jobs_failed_as_an_unknown_function_are_no_sign_of_a_worker(
    store: Store,
) -> None:
    await store.submit(report.options(job_id="r"), 1)
    (claim,) = await store.claim(1)
    error = duron.UnknownFunctionError(job="r", function="report", known=())
    await store.fail("r", claim.epoch, error)
    seen = await store.function_activity(["report"])
    assert seen == {"report": duron.FunctionActivity("report", 0, None)}


def bad(message: str) -> Any:
    return pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$")


async def test_every_bad_argument_is_named(store: Store) -> None:
    naive = datetime(2024, 1, 1)
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"status": "done"},
            "status must be one of 'pending', 'running', 'suspended', 'completed', "
            "'failed', 'cancelled', not 'done'",
        ),
        ({"status": []}, "status must name at least one status"),
        (
            {"function": 3},
            "function takes durable function names or @duron.durable functions, not 3",
        ),
        (
            {"function": ["email", ""]},
            "function takes durable function names or @duron.durable functions, not ''",
        ),
        ({"function": []}, "function must name at least one durable function"),
        (
            {"id_prefix": ""},
            "id_prefix must be a non-empty string (the start of job ids), not ''",
        ),
        (
            {"id_prefix": 7},
            "id_prefix must be a non-empty string (the start of job ids), not 7",
        ),
        (
            {"created_after": naive},
            "created_after must be a datetime with a time zone (naive: "
            "datetime.datetime(2024, 1, 1, 0, 0)); give it one, e.g. "
            "datetime(..., tzinfo=timezone.utc)",
        ),
        (
            {"updated_before": "2024-01-01"},
            "updated_before must be a datetime with a time zone, not '2024-01-01'",
        ),
        (
            {"created_after": at(5), "created_before": at(5)},
            "created_after (2023-11-14T22:13:25+00:00) must be earlier than "
            "created_before (2023-11-14T22:13:25+00:00): no job is in between",
        ),
    ]
    for kwargs, message in cases:
        with bad(message):
            await store.list_jobs(**kwargs)
        with bad(message):
            await store.count_jobs(**kwargs)
    paging: list[tuple[dict[str, Any], str]] = [
        ({"newest_first": "yes"}, "newest_first must be True or False, not 'yes'"),
        ({"limit": 0}, "limit must be a whole number >= 1, not 0"),
        ({"limit": True}, "limit must be a whole number >= 1, not True"),
        ({"limit": 2.5}, "limit must be a whole number >= 1, not 2.5"),
        (
            {"cursor": 17},
            "cursor must be a string list_jobs() returned (next_cursor), not 17",
        ),
    ]
    for kwargs, message in paging:
        with bad(message):
            await store.list_jobs(**kwargs)
    with bad(
        "functions takes durable function names or @duron.durable functions, not 1"
    ):
        await store.function_activity([1])  # type: ignore[list-item]
    with bad(
        "functions takes durable function names or @duron.durable functions, not 1"
    ):
        await store.claim(1, functions=[1])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "c1.!!!",
        "c1." + "x" * 100,
        encode_cursor(1.0, "")[:-2],
        encode_cursor(1.0, ""),
        "c1.W10",  # []
    ],
)
async def test_a_cursor_list_jobs_did_not_return_is_refused(
    store: Store, cursor: str
) -> None:
    shown = cursor if len(cursor) <= 80 else cursor[:77] + "..."
    with bad(
        f"cursor {shown!r} is not one list_jobs() returned: pass a page's "
        "next_cursor (`duron jobs list` prints it as --cursor)"
    ):
        await store.list_jobs(cursor=cursor)


async def test_a_cursor_of_the_other_kind_of_store_is_refused(
    store: Store, backend: Backend
) -> None:
    # SQLite cursors hold seconds, PostgreSQL ones a timestamp.
    other: Any = "2024-01-01T00:00:00+00:00" if backend.name == "SQLite" else 1.5
    with bad(
        f"cursor holds the time {other!r}, which is not one this store writes: "
        "pass a next_cursor of this store's list_jobs()"
    ):
        await store.list_jobs(cursor=encode_cursor(other, "job"))


async def test_claim_takes_only_the_functions_asked_for(store: Store) -> None:
    await store.submit(email.options(job_id="e"), 1)
    await store.submit(report.options(job_id="r"), 1)
    assert await store.claim(5, functions=[]) == []
    assert await store.claim(5, functions=["nobody"]) == []
    (claim,) = await store.claim(5, functions=["report"])
    assert (claim.job_id, claim.function, claim.epoch) == ("r", "report", 1)
    assert (await store.get("e")).status == "pending"
    (claim,) = await store.claim(5)  # any function
    assert claim.job_id == "e"
