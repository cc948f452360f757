"""Routing across worker processes: a worker claims only jobs of the durable
functions it has. Two kinds of job on one store, a rolling deploy: an old worker
process without the new function leaves its jobs pending (never failed) while it
runs its own; a new worker process that has both runs them. On SQLite and, when a
server answers, PostgreSQL; real processes, stopped by SIGTERM."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import duron

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import routing_jobs  # noqa: E402
from postgres_support import drop_schema, dsn, new_schema, requires_postgres  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from duron._jobstore import JobStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=requires_postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """How a worker process names the test's store (see tests/routing_jobs.py)."""
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
        store = routing_jobs.open_store(target)
        try:
            if target[0] == "postgres":
                await store.migrate()  # type: ignore[attr-defined]
            return await action(store)
        finally:
            await store.close()

    return anyio.run(main)


def submit(target: list[str], fn: duron.DurableFn[..., Any], numbers: range) -> None:
    async def run(store: JobStore) -> None:
        for n in numbers:
            await store.submit(fn.options(job_id=f"{fn.name}-{n}"), n)

    on_store(target, run)


def counts(target: list[str], fn: str) -> dict[duron.JobStatus, int]:
    async def run(store: JobStore) -> dict[duron.JobStatus, int]:
        return await store.count_jobs(function=fn)

    result: dict[duron.JobStatus, int] = on_store(target, run)
    return result


def test_an_old_worker_leaves_a_new_function_s_jobs_for_a_new_worker(
    target: list[str], tmp_path: Path
) -> None:
    side = tmp_path / "side.txt"
    side.touch()
    email, gpu = routing_jobs.email_job, routing_jobs.gpu_job
    submit(target, email, range(20))
    submit(target, gpu, range(20))
    script = str(HERE / "routing_jobs.py")

    def start(functions: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, script, str(side), functions, *target])

    procs: list[subprocess.Popen[bytes]] = []

    def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, what
            for p in procs:
                assert p.poll() is None, f"worker {p.pid} exited early"
            time.sleep(0.05)

    try:
        old = start("email_job")
        procs.append(old)
        wait_until(
            lambda: counts(target, "email_job")["completed"] == 20,
            "the old worker never ran its jobs",
        )
        time.sleep(0.5)  # ten more polls of the old worker
        assert counts(target, "gpu_job") == {
            "pending": 20,
            "running": 0,
            "suspended": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
        }

        async def untouched(store: JobStore) -> list[tuple[int, Any]]:
            return [(j.epoch, j.error) for j in await store.list_jobs(function=gpu)]

        assert on_store(target, untouched) == [(0, None)] * 20

        async def activity(store: JobStore) -> dict[str, duron.FunctionActivity]:
            return await store.function_activity([email, gpu])

        seen = on_store(target, activity)
        assert seen["gpu_job"] == duron.FunctionActivity("gpu_job", 0, None)
        assert seen["email_job"].running == 0
        assert seen["email_job"].last_ran is not None

        # The new version is deployed beside the old one; both kinds keep coming.
        new = start("email_job,gpu_job")
        procs.append(new)
        submit(target, email, range(20, 40))
        submit(target, gpu, range(20, 40))
        wait_until(
            lambda: (
                counts(target, "gpu_job")["completed"] == 40
                and counts(target, "email_job")["completed"] == 40
            ),
            "the jobs never all ran",
        )
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=20) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()

    runs: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    up = []
    for line in side.read_text().splitlines():
        kind, *fields = line.split()
        if kind == "up":
            up.append(fields[0])
        else:
            fn, n, pid = fields
            runs[fn, n].append(pid)
    assert up == [str(old.pid), str(new.pid)]
    # Every job ran once (no process died), the new function's only where it is.
    assert sorted(runs) == sorted(
        (fn, str(n)) for fn in ("email_job", "gpu_job") for n in range(40)
    )
    assert all(len(pids) == 1 for pids in runs.values())
    assert {pids[0] for (fn, _), pids in runs.items() if fn == "gpu_job"} == {
        str(new.pid)
    }
    first_emails = {
        pids[0] for (fn, n), pids in runs.items() if fn == "email_job" and int(n) < 20
    }
    assert first_emails == {str(old.pid)}  # before the new worker started
    for fn in ("email_job", "gpu_job"):
        assert counts(target, fn) == {
            "pending": 0,
            "running": 0,
            "suspended": 0,
            "completed": 40,
            "failed": 0,
            "cancelled": 0,
        }
