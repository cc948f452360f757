"""The inbox across real processes, on every SQL store: input sent from other
processes (the test's, and ``duron jobs send`` / ``complete`` / ``tail``) to a job
a worker process runs, a worker SIGKILLed between "input stored" and "input
recorded", and a reader following the job's output across the crash.

Nothing is lost and nothing is recorded twice: every value reaches the durable
code once, the log records each inbox item once, and the output stream holds
each value once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest
from inbox_jobs import collect
from postgres_support import dsn, sql

pytestmark = pytest.mark.anyio

if TYPE_CHECKING:
    from store_backends import Backend, Store

HERE = Path(__file__).parent
JOBS = HERE / "inbox_jobs.py"


def url_of(backend: Backend) -> str:
    if backend.name == "SQLite":
        return f"sqlite:///{backend.path}"  # type: ignore[attr-defined]
    return f"{dsn()}?schema={backend.schema}"  # type: ignore[attr-defined]


def run_sql(backend: Backend, statement: str, *params: object) -> None:
    """A statement on the test's database, behind the store's back
    (``%s`` placeholders)."""
    if backend.name == "SQLite":
        import sqlite3

        with sqlite3.connect(backend.path, isolation_level=None) as db:  # type: ignore[attr-defined]
            db.execute(statement.replace("%s", "?").replace("{s}", ""), params)
        return
    sql(statement.replace("{s}", f'"{backend.schema}".'), *params)  # type: ignore[attr-defined]


@contextmanager
def worker(url: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, str(JOBS), url],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duron", "jobs", *args, "--import", "inbox_jobs"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        timeout=60,
        check=False,
    )


async def log_of(store: Store, job_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) async for _, raw in store.read_log(job_id)]


async def recorded_seqs(store: Store, job_id: str) -> list[int]:
    return [e["seq"] for e in await log_of(store, job_id) if "seq" in e]


async def until(check: Any, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def test_input_from_other_processes_survives_a_killed_worker(
    backend: Backend,
) -> None:
    store = await backend.store()
    url = url_of(backend)
    job_id = await store.submit(collect.options(job_id="crash"), "c")
    items = await store.open_stream(job_id, "items", "w")
    await items.send(1)  # before any worker claimed the job
    followed: list[int] = []

    async def follow() -> None:
        reader = await store.open_stream(job_id, "out", "r")
        async for value in reader:
            followed.append(value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        with worker(url) as first:
            await until(lambda: _has(store, job_id, [1]))
            sent = cli("send", url, job_id, "items", "2")
            assert (sent.returncode, sent.stderr) == (0, "")
            assert (
                sent.stdout
                == "job crash: value for 'items' stored; the job records it\n"
            )
            await items.send(3)
            await until(lambda: _has(store, job_id, [1, 2, 3]))
            first.send_signal(signal.SIGKILL)
            first.wait()
        # Stored while no worker runs: recorded by the next one.
        await items.send(4)
        assert cli("send", url, job_id, "items", "5").returncode == 0
        # As if the first worker died after recording item 3 but before deleting
        # it from the inbox (it may have: the delete comes with its next read):
        # the next run must not record it again.
        run_sql(
            backend,
            "INSERT INTO {s}inbox (job_id, seq, kind, target, data, created) "
            "VALUES (%s, 3, 'value', 'items', '3', "
            + ("0" if backend.name == "SQLite" else "now()")
            + ") ON CONFLICT (job_id, seq) DO NOTHING",
            job_id,
        )
        await items.close()
        with worker(url):
            await until(lambda: store.is_future_pending(job_id, "1"))
            done = cli("complete", url, job_id, "1", "--result", '"yes"')
            assert (done.returncode, done.stderr) == (0, "")
            assert await store.result(job_id) == [1, 2, 3, 4, 5, 3]
    assert followed == [10, 20, 30, 40, 50]
    assert await recorded_seqs(store, job_id) == [1, 2, 3, 4, 5, 6, 7]
    outs = [e for e in await log_of(store, job_id) if e["type"] == "out"]
    assert [e.get("value") for e in outs] == [10, 20, 30, 40, 50, None]
    tail = cli("tail", url, job_id, "out", "--from", "3")
    assert (tail.returncode, tail.stdout, tail.stderr) == (0, "40\n50\n", "")


async def _has(store: Store, job_id: str, values: list[int]) -> bool:
    got = [e["value"] for e in await log_of(store, job_id) if e["type"] == "emit"]
    return got == values


async def test_cli_refusals_are_one_line(backend: Backend) -> None:
    store = await backend.store()
    url = url_of(backend)
    job_id = await store.submit(collect.options(job_id="cli"), "c")
    bad = cli("send", url, job_id, "items", '"many"')
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == (
        "duron jobs: error: value sent to 'items' of job cli (int): cannot encode "
        "str: Input should be a valid integer, unable to parse string as an integer\n"
    )
    wrong = cli("send", url, job_id, "out", "1")
    assert wrong.stderr == (
        "duron jobs: error: 'out' is a StreamWriter the durable code writes to; "
        "read it: open_stream(job_id, 'out', 'r')\n"
    )
    both = cli("send", url, job_id, "items", "1", "--close")
    assert (
        both.stderr
        == "duron jobs: error: give a VALUE to send, or --close (not both)\n"
    )
    unknown = cli("complete", url, "nope", "1", "--result", "1")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("duron jobs: error: no job 'nope' in ")
    assert "duron_test:" not in unknown.stderr  # never the password
    not_json = cli("complete", url, job_id, "1", "--result", "yes")
    assert not_json.stderr.startswith(
        'duron jobs: error: --result must be JSON (\'"text"\', 3, true, {"k": 1}): '
        "'yes' is not ("
    )
