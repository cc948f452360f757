"""Schedules: the tick arithmetic (time zones, the missed-tick policies), and on
every SQL store (the ``backend`` fixture) adding, listing, pausing, resuming and
removing them, one job per tick however many callers, and a worker that runs
them."""

from __future__ import annotations

import re
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import anyio
import pytest

import duron
from duron._schedules import due_tick, next_tick, tick_job_id
from duron.contrib.storage import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import sql

if TYPE_CHECKING:
    from store_backends import Backend, Store


@duron.durable
async def report(ctx: duron.Context, region: str) -> str:
    return f"report {region}"


def at(
    year: int, month: int, day: int, hour: int, minute: int = 0, tz: str = "UTC"
) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


def test_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    s = duron.Schedule("n", "30 2 * * *", timezone="Europe/Paris")
    # 2:30 does not exist on 2024-03-31 in Paris: that day's tick is at 3:00.
    assert next_tick(s, at(2024, 3, 30, 12, tz="Europe/Paris")) == at(
        2024, 3, 31, 3, 0, tz="Europe/Paris"
    )
    assert next_tick(s, at(2024, 3, 31, 3, tz="Europe/Paris")) == at(
        2024, 4, 1, 2, 30, tz="Europe/Paris"
    )


def test_missed_ticks_run_the_latest_once_or_are_skipped() -> None:
    latest = duron.Schedule("l", "0 * * * *")
    skip = duron.Schedule("s", "0 * * * *", missed="skip", grace=60)
    due = at(2024, 5, 1, 10)
    # Found in time: both run the tick.
    assert due_tick(latest, due, due + 5) == (due, at(2024, 5, 1, 11))
    assert due_tick(skip, due, due + 5) == (due, at(2024, 5, 1, 11))
    # Nobody looked for 3.5 hours: 10, 11, 12 and 13 o'clock were missed.
    now = at(2024, 5, 1, 13, 30)
    assert due_tick(latest, due, now) == (at(2024, 5, 1, 13), at(2024, 5, 1, 14))
    assert due_tick(skip, due, now) == (None, at(2024, 5, 1, 14))
    # Not due yet.
    assert due_tick(latest, due, due - 1) == (None, due)
    assert tick_job_id("l", due) == "l@2024-05-01T10:00:00Z"


def test_bad_schedules_are_named() -> None:
    cases: list[tuple[dict[str, object], str]] = [
        (
            {"name": "a@b"},
            "a schedule name is a non-empty string of at most 200 "
            "characters without '@', not 'a@b'",
        ),
        (
            {"cron": "* *"},
            "schedule 'x': '* *' is not a cron expression (Wrong number of fields)",
        ),
        (
            {"timezone": "Mars/Base"},
            "Schedule(timezone=...) takes an IANA time zone "
            "name such as 'Europe/Paris' or 'UTC', not 'Mars/Base'",
        ),
        ({"missed": "all"}, "Schedule(missed=...) takes 'latest' or 'skip', not 'all'"),
        ({"grace": -1}, "Schedule(grace=...) takes seconds >= 0, not -1"),
    ]
    for change, message in cases:
        given: dict[str, object] = {"name": "x", "cron": "0 * * * *", **change}
        with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
            duron.Schedule(**given)  # type: ignore[arg-type]


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.store()


@pytest.mark.anyio
async def test_a_schedule_is_added_listed_paused_resumed_and_removed(
    store: Store,
) -> None:
    hourly = duron.Schedule("hourly", "0 * * * *", timezone="Europe/Paris")
    info = await store.add_schedule(hourly, report.options(queue="reports"), "emea")
    assert (info.schedule, info.function, info.args) == (
        hourly,
        "report",
        {"region": "emea"},
    )
    assert (info.queue, info.priority, info.paused, info.last_tick) == (
        "reports",
        0,
        False,
        None,
    )
    assert info.next_at.minute == 0
    assert info.next_at > datetime.now(timezone.utc)
    # Added again at the next start of the application: nothing moves.
    await store.pause_schedule("hourly")
    again = await store.add_schedule(hourly, report.options(queue="reports"), "emea")
    assert (again.next_at, again.paused) == (info.next_at, True)
    assert str(again) == (
        "hourly '0 * * * *' Europe/Paris report queue=reports missed=latest (paused)"
    )
    await store.resume_schedule("hourly")
    assert [s.paused for s in await store.schedules()] == [False]
    # Another expression: the next tick is computed again.
    moved = await store.add_schedule(
        duron.Schedule("hourly", "30 * * * *"), report, "emea"
    )
    assert moved.next_at.minute == 30
    await store.remove_schedule("hourly")
    assert await store.schedules() == []
    message = f"{store.label}: no schedule named 'hourly'"
    for call in (store.pause_schedule, store.resume_schedule, store.remove_schedule):
        with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
            await call("hourly")


def move_next_tick(store: Store, t: float) -> None:
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE schedules SET next_at = ?", (t,))
        return
    sql(f'UPDATE "{store.schema}".schedules SET next_at = to_timestamp(%s)', t)


@pytest.mark.anyio
async def test_a_tick_starts_one_job_however_many_callers(
    store: Store, backend: Backend
) -> None:
    others = [await backend.store() for _ in range(3)]
    minutely = duron.Schedule("every", "* * * * *")
    info = await store.add_schedule(minutely, report, "us")
    # Its next tick was two minutes ago: the latest missed one (a minute ago)
    # is due, the next one is a minute away.
    move_next_tick(store, info.next_at.timestamp() - 120)
    started: list[list[str]] = [[] for _ in range(4)]

    async def run(i: int, s: Store) -> None:
        started[i] = await s.run_due_schedules({"report": report})

    async with anyio.create_task_group() as tg:
        for i, s in enumerate([store, *others]):
            tg.start_soon(run, i, s)
    ids = [job_id for batch in started for job_id in batch]
    assert len(ids) == 1
    (job,) = await store.list_jobs()
    assert (job.id, job.function, job.args) == (ids[0], "report", {"region": "us"})
    assert re.fullmatch(r"every@\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", job.id)
    assert (await store.get_schedule("every")).next_at > datetime.now(timezone.utc)
    # Another function's workers do not start it.
    assert await others[0].run_due_schedules({"other": report}) == []
    for s in others:
        await s.close()


@pytest.mark.anyio
async def test_a_worker_runs_a_schedule_s_ticks(store: Store) -> None:
    await store.add_schedule(duron.Schedule("tick", "* * * * * *"), report, "apac")
    async with duron.Worker(store, [report], poll_interval=0.05):
        await anyio.sleep(2.6)
    done = await store.list_jobs("completed")
    assert len(done) >= 2
    assert all(j.id.startswith("tick@") and j.result == "report apac" for j in done)
    info = await store.get_schedule("tick")
    assert info.last_tick is not None
    assert tick_job_id("tick", info.last_tick.timestamp()) == done[-1].id
