"""``duron.Worker`` on the PostgreSQL store: its appends in one process go through
the group commit, and three worker processes share one database, one SIGKILLed and
one SIGSTOPped past its lease. What a worker does on every SQL store is in
test_worker.py."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest

import duron
from duron.contrib.storage import PostgresStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import worker_jobs  # noqa: E402
from postgres_support import dsn, requires_postgres, schema_name, sql  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

pytestmark = [requires_postgres, pytest.mark.both_hosts]


@duron.effect
async def step(i: int) -> int:
    return i * 10


@duron.durable
async def steps(ctx: duron.Context, n: int) -> list[int]:
    return [await ctx.run(step, i) for i in range(n)]


@pytest.fixture
def schema() -> Iterator[str]:
    with schema_name() as name:
        yield name


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(dsn(), schema=schema, lease=5)
    await s.migrate()
    yield s
    await s.close()


def worker(store: PostgresStore, *fns: duron.DurableFn[..., Any]) -> duron.Worker:
    return duron.Worker(store, fns, poll_interval=0.05, heartbeat_interval=0.05)


# -- one process -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_worker_s_appends_go_through_the_group_commit(
    store: PostgresStore,
) -> None:
    ids = [await store.submit(steps.options(job_id=f"s{n}"), n) for n in range(1, 6)]
    async with worker(store, steps) as w:
        results = [await store.result(i, steps) for i in ids]
        late = await store.submit(steps.options(job_id="late"), 2)
        assert await store.result(late) == [0, 10]
    assert results == [[10 * i for i in range(n)] for n in range(1, 6)]
    assert w.ended == 6
    assert store.appends > 0
    assert store.flushes <= store.appends


# -- three processes: one killed, one stopped past its lease -------------------------------


def test_three_worker_processes_one_killed_one_stopped_every_job_finishes_once(
    tmp_path: Path,
) -> None:
    n_jobs = 500
    with schema_name() as schema:
        run_three_workers(tmp_path, schema, n_jobs)


def run_three_workers(tmp_path: Path, schema: str, n_jobs: int) -> None:
    s = f'"{schema}"'

    async def submit() -> None:
        async with PostgresStore(dsn(), schema=schema) as store:
            await store.migrate()
            for job in range(n_jobs):
                await store.submit(
                    worker_jobs.chain.options(job_id=worker_jobs.job_id(job)), job
                )

    anyio.run(submit)
    script = str(HERE / "postgres_jobs.py")
    sides = [tmp_path / f"side-{i}.txt" for i in range(3)]
    procs = []
    for i, side in enumerate(sides):
        side.touch()
        # The one to be stopped never learns of its lost leases from heartbeats:
        # when it continues, the fence alone keeps its entries out.
        blind = ["blind"] if i == 1 else []
        procs.append(
            subprocess.Popen([sys.executable, script, dsn(), schema, str(side), *blind])
        )
    survivor, stopped, killed = procs

    def owned_by(p: subprocess.Popen[bytes]) -> list[tuple[object, ...]]:
        return sql(
            f"SELECT id, epoch FROM {s}.jobs WHERE lease_owner LIKE %s "
            "AND status = 'running'",
            f"%:{p.pid}:%",
        )

    def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, what
            for p in procs:
                assert p.poll() is None or p is killed, f"worker {p.pid} exited early"
            time.sleep(0.02)

    try:
        # Both victims are well into their jobs.
        wait_until(
            lambda: all(side.read_text().count("run ") >= 40 for side in sides[1:]),
            "the workers never got going",
            30,
        )
        killed.send_signal(signal.SIGKILL)
        stopped.send_signal(signal.SIGSTOP)
        stale = owned_by(stopped)
        assert stale, "the stopped worker held no job"
        # Its lease runs out and the survivor takes every job it held.
        wait_until(lambda: not owned_by(stopped), "its jobs were never taken", 20)
        stopped.send_signal(signal.SIGCONT)
        assert survivor.wait(timeout=40) == 0
        assert stopped.wait(timeout=20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait()
    killed_pid, stopped_pid = str(killed.pid), str(stopped.pid)

    # What ran: (job, op) -> [(token, epoch)]; what the stopped worker was refused.
    runs: dict[tuple[int, int], list[tuple[str, int]]] = collections.defaultdict(list)
    refused: dict[int, list[tuple[str, int]]] = {i: [] for i in range(3)}
    for i, side in enumerate(sides):
        for line in side.read_text().splitlines():
            kind, *fields = line.split()
            if kind == "run":
                job, op, tok, at = fields
                runs[int(job), int(op)].append((tok, int(at)))
            else:
                refused[i].append((fields[0], int(fields[1])))

    jobs = sql(f"SELECT id, status, result FROM {s}.jobs")
    assert len(jobs) == n_jobs
    for job_id, status, result in jobs:
        number = int(str(job_id).removeprefix("job-"))
        assert (status, orjson.loads(str(result))) == (
            "completed",
            worker_jobs.expected(number),
        ), job_id

    by_job: dict[str, list[tuple[int, int, dict[str, Any]]]] = collections.defaultdict(
        list
    )
    for job_id, seq, epoch, raw in sql(
        f"SELECT job_id, seq, epoch, entry FROM {s}.entries ORDER BY job_id, seq"
    ):
        by_job[str(job_id)].append(
            (int(str(seq)), int(str(epoch)), orjson.loads(str(raw)))
        )
    assert len(by_job) == n_jobs
    logged: dict[tuple[int, int], tuple[str, int]] = {}
    for job_id, rows in by_job.items():
        number = int(job_id.removeprefix("job-"))
        assert [seq for seq, _, _ in rows] == list(range(len(rows)))
        # Exactly once: one job entry first, one end last, one completion per
        # operation (``start`` entries name operations still running at a flush).
        kinds = [e["type"] for _, _, e in rows]
        assert (kinds[0], kinds[-1], kinds.count("job"), kinds.count("end")) == (
            "job",
            "end",
            1,
            1,
        ), job_id
        completions = [(epoch, e) for _, epoch, e in rows if e["type"] == "done"]
        assert sorted(e["id"] for _, e in completions) == list(
            range(worker_jobs.STEPS)
        ), job_id
        # No writer wrote after a newer epoch did: a stale worker never wrote.
        epochs = [epoch for _, epoch, _ in rows]
        assert epochs == sorted(epochs), (job_id, epochs)
        for epoch, e in completions:
            logged[number, e["id"]] = (e["result"], epoch)

    # The stopped worker tried to write to jobs taken over while it was stopped,
    # and was refused; so was any other stale writer (on a loaded machine a live
    # worker may miss a renewal too). A newer owner wrote after each of them.
    assert refused[1], "the stopped worker never tried to write after its lease ran out"
    # (With the epochs of each log in order, nothing of theirs came after.)
    for job_id, epoch in [r for rs in refused.values() for r in rs]:
        assert by_job[job_id][-1][1] > epoch, (job_id, epoch)

    # No effect whose completion was logged ran again: every other run of the
    # operation was under an older lease (a worker killed or stopped before its
    # completion could be logged).
    assert sorted(logged) == sorted(
        (job, op) for job in range(n_jobs) for op in range(worker_jobs.STEPS)
    )
    reruns = 0
    for key, (token, epoch) in logged.items():
        assert (token, epoch) in runs[key], (key, token, runs[key])
        others = [r for r in runs[key] if r[0] != token]
        assert all(e < epoch for _, e in others), (key, token, epoch, runs[key])
        reruns += len(others)
    assert reruns > 0  # the victims really had effects in flight
    pids = {t.split("-")[0] for key in runs for t, _ in runs[key]}
    assert pids == {str(survivor.pid), stopped_pid, killed_pid}
