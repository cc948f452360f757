"""Queue limits hold across worker processes: three real worker processes (8
slots each) on one store, SQLite and, when a server answers, PostgreSQL.

Every run of a job's effect writes its start and end time to a side file; the
test counts how many ran at once. A queue limited to 2 never has 3 at once,
while a queue without a limit, run the same way, does (the count can see it).
A rate-limited queue's first starts (the store's ``started`` column) never
number more than the limit in any window of its period."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import queue_jobs  # noqa: E402
from postgres_support import drop_schema, dsn, new_schema, requires_postgres, sql  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from duron._jobstore import JobStore

WORKERS = 3


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=requires_postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """How a worker process names the test's store (see tests/queue_jobs.py)."""
    if request.param == "sqlite":
        yield ["sqlite", str(tmp_path / "jobs.db")]
        return
    schema = new_schema()
    try:
        yield ["postgres", dsn(), schema]
    finally:
        drop_schema(schema)


def on_store(target: list[str], action: Callable[[JobStore], Any]) -> Any:
    async def main() -> Any:
        store = queue_jobs.open_store(target)
        try:
            if target[0] == "postgres":
                await store.migrate()  # type: ignore[attr-defined]
            return await action(store)
        finally:
            await store.close()

    return anyio.run(main)


def run_workers(target: list[str], side: Path, jobs: int) -> None:
    """Start the workers, wait until ``jobs`` jobs completed, stop them."""
    script = str(HERE / "queue_jobs.py")
    procs = [
        subprocess.Popen([sys.executable, script, str(side), *target])
        for _ in range(WORKERS)
    ]

    async def completed(store: JobStore) -> int:
        return (await store.count_jobs("completed"))["completed"]

    try:
        deadline = time.monotonic() + 120
        while on_store(target, completed) < jobs:
            assert time.monotonic() < deadline, "the workers never ran every job"
            for p in procs:
                assert p.poll() is None, f"worker {p.pid} exited early"
            time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert [p.returncode for p in procs] == [0] * WORKERS


def most_at_once(side: Path, prefix: str) -> int:
    """The most effects of jobs named ``prefix...`` that ran at the same time."""
    events: list[tuple[float, int]] = []
    for line in side.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("start", "end") and rest.startswith(prefix):
            t = float(rest.split()[1])
            events.append((t, 1 if kind == "start" else -1))
    assert events
    assert len(events) % 2 == 0
    events.sort()  # at the same time, an end (-1) before a start (+1)
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_a_concurrency_limit_holds_across_worker_processes(
    target: list[str], tmp_path: Path
) -> None:
    side = tmp_path / "side.txt"
    side.touch()

    async def submit(store: JobStore) -> None:
        await store.set_queue(duron.Queue("narrow", concurrency=2))
        fn = queue_jobs.step_job
        for n in range(30):
            await store.submit(fn.options(queue="narrow"), f"narrow-{n}", n)
        for n in range(30):
            await store.submit(fn.options(queue="wide"), f"wide-{n}", n)

    on_store(target, submit)
    run_workers(target, side, 60)
    assert most_at_once(side, "narrow-") == 2
    # The same jobs without a limit: the count sees them overlap.
    assert most_at_once(side, "wide-") > 2


def first_starts(target: list[str], queue: str) -> list[float]:
    if target[0] == "sqlite":
        with sqlite3.connect(target[1]) as db:
            rows = db.execute(
                "SELECT started FROM jobs WHERE queue = ? ORDER BY started", (queue,)
            ).fetchall()
        return [float(r[0]) for r in rows]
    rows = sql(
        f'SELECT started FROM "{target[2]}".jobs WHERE queue = %s ORDER BY started',
        queue,
    )
    return [r[0].timestamp() for r in rows if isinstance(r[0], datetime)]


def test_a_rate_limit_holds_across_worker_processes(
    target: list[str], tmp_path: Path
) -> None:
    side = tmp_path / "side.txt"
    side.touch()

    async def submit(store: JobStore) -> None:
        await store.set_queue(
            duron.Queue("rated", rate_limit=duron.RateLimit(3, per=1.0))
        )
        for n in range(12):
            await store.submit(queue_jobs.step_job.options(queue="rated"), f"r-{n}", n)

    on_store(target, submit)
    run_workers(target, side, 12)
    starts = first_starts(target, "rated")
    assert len(starts) == 12
    # Any 4 consecutive first starts span at least the period: never 4 in 1 s.
    spans = [starts[i + 3] - starts[i] for i in range(len(starts) - 3)]
    assert min(spans) >= 1.0 - 1e-6, spans
    # And the workers kept up with the limit: 12 starts at 3 per second.
    assert starts[-1] - starts[0] < 6.0, starts


def test_a_schedule_starts_one_job_per_tick_under_workers_killed_and_restarted(
    target: list[str], tmp_path: Path
) -> None:
    side = tmp_path / "side.txt"
    side.touch()

    async def add(store: JobStore) -> None:
        every = duron.Schedule("every", "* * * * * *")
        await store.add_schedule(every, queue_jobs.step_job, "tick", 0)  # type: ignore[attr-defined]

    on_store(target, add)
    script = str(HERE / "queue_jobs.py")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, script, str(side), *target])

    procs = [start(), start()]
    try:
        # Kill one worker (SIGKILL) every 1.5 s and start it again: one of the
        # two always runs, so no tick is missed.
        for i in range(4):
            time.sleep(1.5)
            victim = procs[i % 2]
            victim.kill()
            victim.wait()
            procs[i % 2] = start()
        time.sleep(1.5)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)

    async def ticks(store: JobStore) -> list[str]:
        return [j.id for j in await store.list_jobs(id_prefix="every@")]

    ids = on_store(target, ticks)
    seconds = sorted(
        datetime.strptime(i, "every@%Y-%m-%dT%H:%M:%SZ").timestamp() for i in ids
    )
    # Each tick's job once (ids are unique by construction), and no tick left out
    # between the first and the last while a worker ran.
    assert len(seconds) >= 6, ids
    assert [b - a for a, b in itertools.pairwise(seconds)] == [1.0] * (len(seconds) - 1)
