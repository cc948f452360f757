"""``duron jobs list`` filters, order and pages, ``duron jobs count``, and why a
waiting job waits (``list`` and ``show``), on every SQL store (the ``backend``
fixture: the CLI opens it by URL)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio
import orjson
import pytest

import duron
from duron._cli import main

if TYPE_CHECKING:
    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@duron.effect
async def step(i: int) -> int:
    return i


@duron.durable
async def email(ctx: duron.Context, n: int) -> int:
    return await ctx.run(step, n)


@duron.durable
async def report(ctx: duron.Context, n: int) -> int:
    return n


@duron.durable
async def gpu(ctx: duron.Context, n: int) -> int:
    return n


@duron.durable
async def sleeper(ctx: duron.Context, seconds: float) -> int:
    await ctx.run(step, 1)
    await asyncio.sleep(seconds)
    return 1


def store_url(backend: Backend) -> str:
    path = getattr(backend, "path", None)
    if path is not None:
        return f"sqlite:///{path}"
    from postgres_support import dsn

    return f"{dsn()}?schema={getattr(backend, 'schema')}"  # noqa: B009


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``duron jobs ARGV``, run where it runs its own event loop."""
    code = await anyio.to_thread.run_sync(main, ["jobs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:]]


@pytest.fixture
async def store(backend: Backend) -> Store:
    """Five jobs created a second apart from T0: ``e-1`` email completed, ``e-2``
    email pending, ``r-1`` report pending, ``g-1`` gpu pending, ``g-2`` gpu
    pending (updated 100 s after they were created)."""
    s = await backend.store()
    made = [("e-1", email), ("e-2", email), ("r-1", report), ("g-1", gpu), ("g-2", gpu)]
    for i, (job_id, fn) in enumerate(made):
        await s.submit(fn.options(job_id=job_id), i)
    async with email.invoke(s.log("e-1")) as job:
        await job.resume()
        await job.wait()
    for i, (job_id, _) in enumerate(made):
        backend.set_times(job_id, T0 + i, T0 + 100 + i)
    return s


async def test_list_filters_and_order(
    store: Store, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url(backend)
    code, out, _ = await cli(capsys, "list", url, "--function", "gpu", "--newest")
    assert code == 0
    assert [r[0] for r in rows(out)] == ["g-2", "g-1"]
    _, out, _ = await cli(
        capsys, "list", url, "--function", "email", "--function", "report"
    )
    assert [r[0] for r in rows(out)] == ["e-1", "e-2", "r-1"]
    _, out, _ = await cli(capsys, "list", url, "--id-prefix", "g-", "--json")
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["g-1", "g-2"]
    _, out, _ = await cli(
        capsys,
        "list",
        url,
        "--created-after",
        "2023-11-14T22:13:20Z",
        "--created-before",
        "2023-11-14T23:13:22+01:00",  # the same instant as 22:13:22Z
    )
    assert [r[0] for r in rows(out)] == ["e-2"]
    # A time without an offset is UTC; a date is its midnight.
    _, out, _ = await cli(capsys, "list", url, "--updated-after", "2023-11-14T22:15:03")
    assert [r[0] for r in rows(out)] == ["g-2"]
    _, out, _ = await cli(capsys, "list", url, "--created-before", "2023-11-15")
    assert len(rows(out)) == 5
    # A duration is that long ago: these jobs are years old.
    _, out, _ = await cli(capsys, "list", url, "--created-after", "7d")
    assert rows(out) == []
    _, out, _ = await cli(capsys, "list", url, "--status", "completed")
    assert [r[0] for r in rows(out)] == ["e-1"]


async def test_list_pages_with_the_cursor_it_prints(
    store: Store, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url(backend)
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(3):
        code, out, err = await cli(
            capsys, "list", url, "--limit", "2", "--json", *cursor
        )
        assert code == 0
        seen += [orjson.loads(line)["id"] for line in out.splitlines()]
        pages = re.findall(r"^next page: --cursor (\S+)$", err, flags=re.MULTILINE)
        if not pages:
            break
        cursor = ["--cursor", pages[0]]
    assert seen == ["e-1", "e-2", "r-1", "g-1", "g-2"]
    assert "next page" not in err  # the last page says there is none


async def test_count(
    store: Store, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url(backend)
    assert await cli(capsys, "count", url) == (
        0,
        "pending    4\nrunning    0\nsuspended  0\ncompleted  1\nfailed     0\n"
        "cancelled  0\n"
        "total      5\n",
        "",
    )
    code, out, _ = await cli(capsys, "count", url, "--function", "email", "--json")
    assert (code, orjson.loads(out)) == (
        0,
        {
            "pending": 1,
            "running": 0,
            "suspended": 0,
            "completed": 1,
            "failed": 0,
            "cancelled": 0,
            "total": 2,
        },
    )
    assert await cli(
        capsys, "count", url, "--status", "pending", "--id-prefix", "g"
    ) == (0, "pending  2\ntotal    2\n", "")


async def test_why_waiting_jobs_wait(
    store: Store, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url(backend)
    # r-1 runs under a live lease; another report job waits behind it.
    await store.submit(report.options(job_id="r-2"), 9)
    (claim,) = await store.claim(1, functions=["report"])
    assert claim.job_id == "r-1"
    # A gpu job whose worker died: its lease ran out.
    (dead,) = await store.claim(1, functions=["gpu"])
    backend.expire(dead.job_id)
    code, out, err = await cli(capsys, "list", url)
    assert code == 0
    assert [(r[0], r[1]) for r in rows(out)] == [
        ("e-1", "completed"),
        ("e-2", "pending"),
        ("r-1", "running"),
        ("g-1", "running"),
        ("g-2", "pending"),
        ("r-2", "pending"),
    ]
    lines = err.splitlines()
    assert len(lines) == 4, err
    assert re.fullmatch(
        rf"waiting: e-2: no job of email is running; one last ran at {TIME}: is a "
        r"worker that has email up\?",
        lines[0],
    )
    assert re.fullmatch(
        rf"waiting: g-1: its lease ran out at {TIME} \(its worker died or "
        r"stalled\); no job of gpu is running; one last ran at "
        rf"{TIME}: is a worker that has gpu up\?",
        lines[1],
    )
    assert lines[2:] == [
        "waiting: g-2: no job of gpu is running; one last ran at "
        + lines[1].rsplit("one last ran at ", 1)[1],
        "waiting: r-2: 1 job of report running now: waits for a free slot in a "
        "worker that has report",
    ]
    code, out, _ = await cli(capsys, "list", url, "--json", "--function", "report")
    assert [(j["id"], j["waiting"]) for j in map(orjson.loads, out.splitlines())] == [
        ("r-1", None),
        (
            "r-2",
            "1 job of report running now: waits for a free slot in a worker that "
            "has report",
        ),
    ]
    code, out, _ = await cli(capsys, "show", url, "r-2")
    assert (
        "waiting: 1 job of report running now: waits for a free slot in a worker "
        "that has report\n"
    ) in out
    code, out, _ = await cli(capsys, "show", url, "e-1", "--json")
    assert orjson.loads(out)["waiting"] is None


async def test_a_suspended_job_waits_for_a_worker_once_its_timer_is_due(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await backend.store()
    await store.submit(sleeper.options(job_id="s"), 0.3)
    worker = duron.Worker(store, [sleeper], poll_interval=0.05, suspend_after=0.05)
    async with worker:
        with anyio.fail_after(10):
            while (await store.get("s")).status != "suspended":
                await anyio.sleep(0.02)
    url = store_url(backend)
    # Its timer is not due: it waits for time, not for a worker.
    assert (await cli(capsys, "list", url))[2] == ""
    await anyio.sleep(0.4)
    code, out, err = await cli(capsys, "list", url)
    assert code == 0
    assert [r[:2] for r in rows(out)] == [["s", "suspended"]]
    assert re.fullmatch(
        rf"waiting: s: no job of sleeper is running; one last ran at {TIME}: is a "
        r"worker that has sleeper up\?\n",
        err,
    ), err


async def test_a_function_no_worker_ever_ran(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await backend.store()
    for n in range(5):
        await store.submit(gpu.options(job_id=f"g{n}"), n)
    code, _, err = await cli(capsys, "list", store_url(backend))
    assert (code, err) == (
        0,
        "waiting: g0, g1, g2 and 2 more: no job of gpu has run yet: no worker that "
        "has gpu took one; start one with duron.Worker(store, [gpu, ...])\n",
    )


async def test_bad_options(
    store: Store, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url(backend)
    assert await cli(capsys, "list", url, "--limit", "0") == (
        2,
        "",
        "duron jobs: error: limit must be a whole number >= 1, not 0\n",
    )
    assert await cli(capsys, "list", url, "--cursor", "nope") == (
        2,
        "",
        "duron jobs: error: cursor 'nope' is not one list_jobs() returned: pass a "
        "page's next_cursor (`duron jobs list` prints it as --cursor)\n",
    )
    assert await cli(
        capsys,
        "count",
        url,
        "--created-after",
        "2024-01-02",
        "--created-before",
        "2024-01-01",
    ) == (
        2,
        "",
        "duron jobs: error: created_after (2024-01-02T00:00:00+00:00) must be "
        "earlier than created_before (2024-01-01T00:00:00+00:00): no job is in "
        "between\n",
    )
    with pytest.raises(SystemExit) as exit_:
        await cli(capsys, "list", url, "--updated-after", "yesterday")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "duron jobs list: error: argument --updated-after: 'yesterday' is not a "
        "time: write 2026-05-01, 2026-05-01T12:00:00Z, 2026-05-01T14:00:00+02:00, "
        "or a duration meaning that long ago (30m, 12h, 7d)\n"
    )


def test_a_time_option_reads_an_offset_and_utc() -> None:
    from duron._cli._job_list import moment

    assert moment("2024-01-01T10:00:00+02:00") == datetime(
        2024, 1, 1, 8, tzinfo=timezone.utc
    )
    assert moment("2024-01-01T08:00:00Z") == datetime(
        2024, 1, 1, 8, tzinfo=timezone.utc
    )
    assert moment("2024-01-01") == datetime(2024, 1, 1, tzinfo=timezone.utc)
    before = datetime.now(timezone.utc)
    ago = moment("90m")
    assert abs((before - ago).total_seconds() - 5400) < 5
