"""When the database goes away: PostgreSQL restarted and stopped under running work.

These tests run on a PostgreSQL cluster of their own (tests/postgres_cluster.py),
which they restart and stop at will; the shared test server is never touched, so
they run alongside everything else. Every test leaves the cluster running.
"""

from __future__ import annotations

import collections
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

import duron
from duron.contrib.storage import PostgresStore
from duron.testing import verify_all_async

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import outage_jobs  # noqa: E402
from postgres_cluster import (  # noqa: E402
    PASSWORD,
    Cluster,
    cluster,
    requires_postgres_server,
)
from postgres_support import new_schema  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

pytestmark = [requires_postgres_server, pytest.mark.both_hosts]


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    with cluster() as c:
        yield c


@pytest.fixture
def up(server: Cluster) -> Iterator[Cluster]:
    """The cluster, running again after the test whatever it did."""
    yield server
    if not server.running():
        server.start()


def label(server: Cluster, schema: str) -> str:
    return f"postgresql://duron_outage@127.0.0.1:{server.port}/duron_outage?schema={schema}"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


# -- two worker processes, the server restarted three times and stopped once ---------------


def test_two_workers_ride_out_restarts_and_a_stop_and_no_job_fails(
    up: Cluster, tmp_path: Path
) -> None:
    n_jobs = 40
    schema = new_schema()

    async def submit() -> None:
        async with PostgresStore(up.dsn, schema=schema) as store:
            await store.migrate()
            for job in range(n_jobs):
                await store.submit(
                    outage_jobs.order.options(job_id=outage_jobs.job_id(job)), job
                )

    anyio.run(submit)
    script = str(HERE / "outage_worker.py")
    sides = [tmp_path / f"side-{i}.txt" for i in range(2)]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, script, up.dsn, schema, str(side), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for side, log in zip(sides, logs, strict=True)
    ]
    outages = [up.restart, up.restart, "stop", up.restart]
    started = time.monotonic()
    try:
        for at, outage in zip((2.0, 5.0, 8.0, 14.0), outages, strict=True):
            time.sleep(max(0.0, started + at - time.monotonic()))
            for p in procs:
                assert p.poll() is None, f"worker {p.pid} exited early"
            assert sum(len(s.read_text().splitlines()) for s in sides) < n_jobs * 15, (
                "the jobs were done before the outage"
            )
            if outage == "stop":
                up.stop()
                time.sleep(3)  # down for a while: requests wait, then give up
                up.start()
            else:
                assert callable(outage)
                outage()
        outputs = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            outputs.append(out.decode(errors="replace"))
            assert p.returncode == 0, outputs[-1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = time.monotonic() - started

    # Every job completed, none failed, none left pending or running.
    async def outcome() -> tuple[list[duron.JobInfo], list[duron.testing.VerifyReport]]:
        async with PostgresStore(up.dsn, schema=schema) as store:
            jobs = await store.list_jobs()
            reports = await verify_all_async(
                outage_jobs.order, [store.log(j.id) for j in jobs]
            )
            return jobs, reports

    jobs, reports = anyio.run(outcome)
    assert sorted(j.id for j in jobs) == sorted(
        outage_jobs.job_id(n) for n in range(n_jobs)
    )
    assert {j.status for j in jobs} == {"completed"}, [str(j) for j in jobs]
    # Every log replays, to its end.
    assert all(r.status == "ok" and r.finished for r in reports)

    # No effect ran again once its result was committed: the run whose token the
    # job's result holds is the last run of that operation. Other runs were in
    # flight when their job stopped (their results were never recorded).
    runs: dict[tuple[int, int], list[tuple[float, str]]] = collections.defaultdict(list)
    for side in sides:
        for line in side.read_text().splitlines():
            _, job, op, token, when = line.split()
            runs[int(job), int(op)].append((float(when), token))
    reruns = 0
    for j in jobs:
        number = int(j.id.removeprefix("order-"))
        assert isinstance(j.result, list)
        assert len(j.result) == 3 * outage_jobs.STEPS
        for position, committed in enumerate(j.result):
            ran = sorted(runs[number, position])
            assert committed in [t for _, t in ran], (j.id, position)
            assert ran[-1][1] == committed, (j.id, position, ran)
            reruns += len(ran) - 1
    # Re-runs are the effects in flight at an outage: a few per outage, not a
    # restart of every job.
    assert reruns <= 8 * 2 * len(outages), reruns

    # Each worker saw each outage at most once (some it may not have seen at all:
    # a short restart while it had nothing to ask), logged it as one WARNING
    # without a traceback, and logged its end; nothing else went wrong.
    for log, output in zip(logs, outputs, strict=True):
        text = log.read_text()
        assert "Traceback" not in text
        assert "Traceback" not in output
        assert PASSWORD not in text
        assert PASSWORD not in output
        warnings = [line for line in text.splitlines() if line.startswith("WARNING")]
        assert 1 <= len(warnings) <= len(outages), text
        for line in warnings:
            assert re.fullmatch(
                r"WARNING duron duron: PostgreSQL store "
                + re.escape(label(up, schema))
                + r" is unavailable \(.+\); retrying with backoff, jobs stop at a "
                r"safe point and resume from their logs once it is back",
                line,
            ), line
        back = re.findall(
            r"INFO duron duron: PostgreSQL store .* is reachable again after", text
        )
        assert len(back) == len(warnings), text
        assert "ERROR" not in text, text
    # The stop outlasted the workers' connect timeout (2 s): the jobs that had
    # to write meanwhile were stopped at a safe point, unfailed, and resumed.
    stopped = sum(
        len(re.findall(r" stopped job \S+ \(.+?\) at a safe point \(", log.read_text()))
        for log in logs
    )
    assert stopped >= 1
    print(f"{elapsed:.1f} s, {stopped} runs stopped, {reruns} effects ran again")
    assert elapsed < 60


# -- one process -----------------------------------------------------------------------------


@duron.effect
async def nothing() -> int:
    return 0


@duron.durable
async def noop(ctx: duron.Context) -> int:
    return await ctx.run(nothing)


@pytest.mark.anyio
async def test_the_pool_never_hands_out_a_connection_the_restart_killed(
    up: Cluster,
) -> None:
    store = PostgresStore(up.dsn, schema=new_schema(), pool_size=4)
    await store.migrate()
    async with anyio.create_task_group() as tg:  # several connections open
        for _ in range(4):
            tg.start_soon(store.list_jobs)
    pool = store._engine._pool
    assert pool is not None
    assert pool.opened >= 2
    await anyio.to_thread.run_sync(up.restart)
    # Every pooled connection is dead: the first request after the restart
    # gets a new one instead, and succeeds.
    assert await store.submit(noop.options(job_id="after")) == "after"
    assert pool.discarded >= 2
    assert store.outage.count == 0  # nothing failed
    await store.close()


@pytest.mark.anyio
async def test_a_short_stop_is_waited_out_and_logged_once(
    up: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    schema = new_schema()
    store = PostgresStore(up.dsn, schema=schema, connect_timeout=10)
    await store.migrate()
    await store.list_jobs()
    caplog.set_level(logging.INFO, logger="duron")
    await anyio.to_thread.run_sync(up.stop)
    restart = threading.Timer(1.0, up.start)
    restart.start()
    try:
        # Sent while the server is down: it waits for the server, and goes in.
        assert await store.submit(noop.options(job_id="during")) == "during"
    finally:
        restart.join()
    assert (await store.get("during")).status == "pending"
    await store.close()
    records = [r for r in caplog.records if r.name == "duron"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert records[0].getMessage() == (
        f"duron: PostgreSQL store {label(up, schema)} is unavailable (connect "
        'failed: connection failed: connection to server at "127.0.0.1", port '
        f"{up.port} failed: Connection refused Is the server running on that host "
        "and accepting TCP/IP connections?); retrying with backoff, jobs stop at a "
        "safe point and resume from their logs once it is back"
    )
    assert re.fullmatch(
        rf"duron: PostgreSQL store {re.escape(label(up, schema))} is reachable again "
        r"after \d+\.\d s",
        records[1].getMessage(),
    )
    assert all(r.exc_info is None for r in records)  # no traceback


seed_runs: list[str] = []


@duron.effect
async def first(n: int) -> int:
    seed_runs.append("first")
    return n


@duron.effect
async def second(n: int) -> int:
    seed_runs.append("second")
    await seed_gate.wait()
    return 2 * n


seed_gate = anyio.Event()


@duron.durable
async def seed_way(ctx: duron.Context, n: int) -> int:
    a = await ctx.run(first, n)
    return a + await ctx.run(second, n)


@pytest.mark.anyio
async def test_a_seed_way_job_across_an_outage_gets_a_clear_error_then_resumes(
    up: Cluster,
) -> None:
    global seed_gate
    seed_gate = anyio.Event()
    seed_runs.clear()
    schema = new_schema()
    store = PostgresStore(up.dsn, schema=schema, connect_timeout=1)
    await store.migrate()
    async with seed_way.invoke(store.log("s1")) as job:
        await job.start(3)
        await until(lambda: seed_runs == ["first", "second"])
        await anyio.to_thread.run_sync(up.stop)
        seed_gate.set()  # its result cannot be recorded
        with pytest.raises(duron.StoreUnavailableError) as caught:
            await job.wait()
    # Leaving the block gave the lease back, or tried to: no error of its own
    # hides the one above.
    error = caught.value
    assert str(error) == (
        f"PostgreSQL store {label(up, schema)} is unavailable right now: append of "
        "job s1 failed: no connection within 1 s (connection failed: connection to "
        f'server at "127.0.0.1", port {up.port} failed: Connection refused Is the '
        "server running on that host and accepting TCP/IP connections?); try again "
        "once it is back"
    )
    assert (error.store, error.operation, error.job) == (
        label(up, schema),
        "append",
        "s1",
    )
    assert PASSWORD not in str(error)

    await anyio.to_thread.run_sync(up.start)
    seed_runs.clear()
    # Resumed later (here by the same store object, whose lease is still on
    # the job): nothing committed is lost, nothing committed runs again.
    async with seed_way.invoke(store.log("s1")) as job:
        await job.resume()
        assert await job.wait() == 9
    assert seed_runs == ["second"]
    info = await store.get("s1")
    assert (info.status, info.result) == ("completed", 9)
    await store.close()


@pytest.mark.anyio
async def test_a_worker_started_while_the_server_is_down_waits_for_it_quietly(
    up: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    schema = new_schema()
    async with PostgresStore(up.dsn, schema=schema) as setup:
        await setup.migrate()
        await setup.submit(noop.options(job_id="waiting"))
    await anyio.to_thread.run_sync(up.stop)
    caplog.set_level(logging.INFO, logger="duron")
    store = PostgresStore(up.dsn, schema=schema)
    claims = 0
    claim = store.claim

    async def counting(
        limit: int,
        *,
        functions: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
    ) -> list[duron.Claim]:
        nonlocal claims
        claims += 1
        return await claim(limit, functions=functions, queues=queues)

    store.claim = counting  # type: ignore[method-assign]
    async with duron.Worker(store, [noop], poll_interval=0.02) as w:
        await anyio.sleep(2)
        # Polling every 20 ms would be 100 tries; backing off, a handful.
        assert 2 <= claims <= 8, claims
        await anyio.to_thread.run_sync(up.start)
        assert await store.result("waiting") == 0
    assert w.ended == 1
    await store.close()
    records = [r for r in caplog.records if r.name == "duron"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert records[0].getMessage() == (
        f"duron: PostgreSQL store {label(up, schema)} is unavailable (connect "
        'failed: connection failed: connection to server at "127.0.0.1", port '
        f"{up.port} failed: Connection refused Is the server running on that host "
        "and accepting TCP/IP connections?); retrying with backoff, jobs stop at a "
        "safe point and resume from their logs once it is back"
    )
    assert all(r.exc_info is None for r in records)
