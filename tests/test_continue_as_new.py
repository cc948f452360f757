"""Continue as new: a job ends its log and goes on, as the same job, in a fresh one.

Every store keeps the runs as a chain (memory, file, SQLite, PostgreSQL); the
switch survives a real SIGKILL at each point around it, with nothing lost and
nothing doubled; a resumed job replays its current run only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest

import duron
from duron._engine import Engine
from duron._entries import JobFinished, JobStarted
from duron._log import decode_entry, encode_entry
from duron._operations import Ended
from duron._verify import verify_log
from duron.contrib.storage import (
    FileLogStorage,
    MemoryLogStorage,
    PostgresStore,
    SQLiteStore,
)

sys.path.insert(0, str(Path(__file__).parent))
from chain_worker import LAST, counter
from postgres_support import dsn, requires_postgres, schema_name, sql

pytestmark = pytest.mark.anyio

if TYPE_CHECKING:
    from store_backends import Backend

WORKER = Path(__file__).parent / "chain_worker.py"
TOTAL = sum(range(LAST))


@duron.effect
async def double(n: int) -> int:
    return 2 * n


@duron.durable
async def looping(ctx: duron.Context, n: int, total: int = 0) -> int:
    for i in range(3):
        total += await ctx.run(double, n + i)
    if n >= 9:
        return total
    ctx.continue_as_new(n + 3, total=total)


LOOP_TOTAL = 2 * sum(range(12))


async def chain_args(log: Any) -> list[dict[str, Any]]:
    """The arguments of each run of the chain, as its job entry records them."""
    out = []
    for run in range(await log.run_count()):
        entries = [raw async for _, raw in log.read_run(run)]
        first = decode_entry(entries[0], job="t", offset=0)
        assert isinstance(first, JobStarted)
        assert first.run == run
        out.append(first.args)
    return out


# -- the log format ------------------------------------------------------------------


def test_an_end_that_continues_names_the_next_run() -> None:
    nxt = JobStarted("f", {"n": 3}, "s1", 5.0, "m", run=1)
    raw = encode_entry(JobFinished(5.0, next=nxt))
    assert orjson.loads(raw) == {
        "type": "end",
        "t": 5.0,
        "next": {
            "type": "job",
            "version": 1,
            "fn": "f",
            "module": "m",
            "args": {"n": 3},
            "seed": "s1",
            "t": 5.0,
            "run": 1,
        },
    }
    back = decode_entry(raw, job="j", offset=0)
    assert isinstance(back, JobFinished)
    assert back.next == nxt
    assert (back.result, back.error) == (None, None)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            {"type": "end", "t": 1, "result": 2, "next": {}},
            "field 'result' of an end entry comes with field 'next' (a job that "
            "continued as new ends without a result)",
        ),
        (
            {"type": "end", "t": 1, "next": [1]},
            "field 'next' of an end entry must be a job entry, not a list",
        ),
        (
            {"type": "end", "t": 1, "next": {"type": "done"}},
            "field 'next' of an end entry must be a job entry (its 'type' is \"job\")",
        ),
        (
            {"type": "end", "t": 1, "next": {"type": "job", "version": 1}},
            "field 'next.args' of an end entry is missing",
        ),
        (
            {
                "type": "job",
                "version": 1,
                "fn": "f",
                "args": {},
                "seed": "s",
                "t": 1,
                "run": 0,
            },
            "field 'run' of a job entry must be an integer >= 1, not 0",
        ),
    ],
)
def test_a_damaged_continuation_is_named(entry: dict[str, Any], reason: str) -> None:
    with pytest.raises(duron.CorruptLogError) as info:
        decode_entry(orjson.dumps(entry), job="j", offset=7)
    assert info.value.reason == reason


def test_replay_compares_the_next_run_by_function_and_arguments() -> None:
    engine = Engine("j", replaying=True)
    recorded = JobStarted("f", {"n": 3}, "s1", 5.0, run=1)
    same = JobStarted("f", {"n": 3}, "other seed", 9.0, run=1)
    engine.check_end(Ended(None, None, 5.0, recorded), (None, None), same)
    other = JobStarted("f", {"n": 4}, "s1", 5.0, run=1)
    with pytest.raises(duron.NonDeterminismError) as info:
        engine.check_end(Ended(None, None, 5.0, recorded), (None, None), other)
    assert info.value.kind == "other-end"
    assert (info.value.recorded, info.value.requested) == (
        "the job's end with a continue as new with f(n=3)",
        "an end with a continue as new with f(n=4)",
    )
    with pytest.raises(duron.NonDeterminismError) as info:
        engine.check_end(Ended(None, None, 5.0, recorded), (6, None), None)
    assert info.value.requested == "an end with result 6"


# -- every store keeps the chain -----------------------------------------------------


async def test_memory_log_keeps_the_chain() -> None:
    log = MemoryLogStorage()
    async with looping.invoke(log) as job:
        await job.start(0)
        assert await job.wait() == LOOP_TOTAL
    assert await chain_args(log) == [
        {"n": 0},
        {"n": 3, "total": 6},
        {"n": 6, "total": 30},
        {"n": 9, "total": 72},
    ]
    assert len(log.raw) == 5  # the current run: job entry, 3 effects, end


async def test_file_log_chain_and_replay_of_the_current_run_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.jsonl"
    log = FileLogStorage(path)
    async with looping.invoke(log) as job:
        await job.start(0)
        assert await job.wait() == LOOP_TOTAL
    assert sorted(os.listdir(tmp_path)) == [
        "log.1.jsonl",
        "log.2.jsonl",
        "log.3.jsonl",
        "log.jsonl",
    ]
    assert await chain_args(log) == [
        {"n": 0},
        {"n": 3, "total": 6},
        {"n": 6, "total": 30},
        {"n": 9, "total": 72},
    ]
    # Damage the middle of the earlier runs: a resume never reads them.
    for name in ("log.1.jsonl", "log.2.jsonl"):
        lines = (tmp_path / name).read_bytes().split(b"\n")
        lines[2] = b"{not json"
        (tmp_path / name).write_bytes(b"\n".join(lines))
    async with looping.invoke(FileLogStorage(path)) as job:
        await job.resume()
        assert await job.wait() == LOOP_TOTAL
    # start() with the first run's arguments continues the chain...
    async with looping.invoke(FileLogStorage(path)) as job:
        await job.start(0)
        assert await job.wait() == LOOP_TOTAL
    # ...and with others is refused, naming what the job was started with.
    async with looping.invoke(FileLogStorage(path)) as job:
        with pytest.raises(duron.JobMismatchError) as info:
            await job.start(1)
    assert str(info.value) == (
        f"job {path}: the log was started with looping(n=0) "
        "but start() was called with looping(n=1); use "
        "resume() to continue the logged job, or a new log for new arguments"
    )


async def test_sql_store_chain_keeps_the_job_id(backend: Backend) -> None:
    store = await backend.store()
    job_id = await store.submit(looping.options(job_id="loop"), 0)
    async with duron.Worker(store, [looping], poll_interval=0.05):
        assert await store.result(job_id, looping, timeout=30) == LOOP_TOTAL
    info = await store.get("loop")
    assert (info.status, info.args) == ("completed", {"n": 0})
    assert await store.run_count("loop") == 4
    assert await chain_args(store.log("loop")) == [
        {"n": 0},
        {"n": 3, "total": 6},
        {"n": 6, "total": 30},
        {"n": 9, "total": 72},
    ]
    sizes = await store.log_sizes(["loop"])
    current = [raw async for _, raw in store.read_log("loop")]
    assert len(current) == 5
    assert sizes == {"loop": duron.LogSize(5, sum(map(len, current)), 4)}
    # A fork copies the current run, from its start.
    fork = await store.fork("loop", at=1, new_id="loop-fork")
    forked = [raw async for _, raw in store.read_log(fork)]
    assert forked == current[:2]


async def test_a_storage_without_a_chain_refuses_with_a_clear_error() -> None:
    class Plain:
        def __init__(self) -> None:
            self._inner = MemoryLogStorage(label="plain")
            self.label = "plain"

        async def acquire(self) -> None:
            await self._inner.acquire()

        async def release(self) -> None:
            await self._inner.release()

        def read(self) -> Any:
            return self._inner.read()

        async def append(self, entries: Any, /) -> None:
            await self._inner.append(entries)

    async with looping.invoke(Plain()) as job:
        await job.start(0)
        with pytest.raises(duron.UsageError) as info:
            await job.wait()
    assert str(info.value) == (
        "job plain: continue_as_new() needs a storage that keeps a chain of logs "
        "(a continue_log method); Plain has none"
    )


@duron.durable
async def bad_next(ctx: duron.Context, n: int) -> int:
    await ctx.run(double, n)
    ctx.continue_as_new("many")


async def test_bad_arguments_fail_at_the_call() -> None:
    log = MemoryLogStorage(label="bad")
    async with bad_next.invoke(log) as job:
        await job.start(1)
        with pytest.raises(duron.PayloadEncodeError) as info:
            await job.wait()
    assert str(info.value) == (
        "job bad: argument 'n' of bad_next (int): cannot encode str: Input should "
        "be a valid integer, unable to parse string as an integer"
    )
    assert len(log.raw) == 2  # nothing of a switch was written
    assert log.previous_runs == []


async def test_verify_replays_the_current_run(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = FileLogStorage(path)
    async with looping.invoke(log) as job:
        await job.start(0)
        assert await job.wait() == LOOP_TOTAL
    report = await verify_log(looping, FileLogStorage(path))
    assert (report.status, report.entries) == ("ok", 5)
    # An earlier run, whose end names the next run, verifies too.
    (tmp_path / "run1.jsonl").write_bytes((tmp_path / "log.1.jsonl").read_bytes())
    report = await verify_log(looping, FileLogStorage(tmp_path / "run1.jsonl"))
    assert report.status == "ok"

    @duron.durable
    async def looping_changed(ctx: duron.Context, n: int, total: int = 0) -> int:
        for i in range(3):
            total += await ctx.run(double, n + i)
        ctx.continue_as_new(n + 4, total=total)

    report = await verify_log(
        {"looping": looping_changed},
        FileLogStorage(tmp_path / "run1.jsonl"),
    )
    assert report.status == "incompatible"
    assert report.reason == "diverged"


def test_cli_verify_and_inspect_a_chained_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log.jsonl"

    async def run() -> None:
        async with looping.invoke(FileLogStorage(path)) as job:
            await job.start(0)
            await job.wait()

    anyio.run(run)
    from duron._cli import main

    code = main(["verify", "test_continue_as_new:looping", str(path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    code = main(["inspect", str(path), "--plain"])
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "run      3 of runs 0 to 3 (the job continued as new; --run N shows another)"
        in out
    )
    code = main(["inspect", str(path), "--plain", "--run", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "continued as new at +" in out
    assert "as run 2: looping(n=6, total=30)" in out
    code = main(["inspect", str(path), "--plain", "--run", "7"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"duron inspect: {path} holds runs 0 to 3, not run 7\n"
    )


# -- a real SIGKILL around the switch ------------------------------------------------


def _worker(
    kind: str, target: str, crash: str, side_dir: Path
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHAIN_SIDE_DIR": str(side_dir)}
    return subprocess.run(
        [sys.executable, str(WORKER), kind, target, crash],
        capture_output=True,
        env=env,
        timeout=120,
    )


def _check_crash_then_resume(
    kind: str, target: str, crash: str, side_dir: Path
) -> None:
    killed = _worker(kind, target, crash, side_dir)
    assert killed.returncode == -9, killed.stderr.decode()
    done = _worker(kind, target, "none", side_dir)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"result": TOTAL}
    ticks = [int(x) for x in (side_dir / "effects.log").read_text().split()]
    # Every effect ran once: none was lost, none ran again after the crash.
    assert ticks == list(range(LAST))


def _expected_chain() -> list[dict[str, Any]]:
    return [
        {"n": 0},
        {"n": 3, "total": 3},
        {"n": 6, "total": 15},
        {"n": 9, "total": 36},
    ]


@pytest.mark.parametrize("crash", ["before", "between", "after"])
def test_file_store_sigkill_around_the_switch(tmp_path: Path, crash: str) -> None:
    _check_crash_then_resume("file", str(tmp_path), crash, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("log*")) == [
        "log.1.jsonl",
        "log.2.jsonl",
        "log.3.jsonl",
        "log.jsonl",
    ]
    log = FileLogStorage(tmp_path / "log.jsonl")
    assert anyio.run(chain_args, log) == _expected_chain()


@pytest.mark.parametrize("crash", ["before", "after"])
def test_sqlite_store_sigkill_around_the_switch(tmp_path: Path, crash: str) -> None:
    db = tmp_path / "jobs.db"
    _check_crash_then_resume("sqlite", str(db), crash, tmp_path)

    async def check() -> None:
        store = SQLiteStore(db)
        try:
            assert await chain_args(store.log("ticker")) == _expected_chain()
            assert await store.result("ticker", counter) == TOTAL
        finally:
            await store.close()

    anyio.run(check)


@requires_postgres
@pytest.mark.parametrize("crash", ["before", "after"])
def test_postgres_store_sigkill_around_the_switch(tmp_path: Path, crash: str) -> None:
    with schema_name() as schema:

        async def migrate() -> None:
            store = PostgresStore(dsn(), schema=schema)
            await store.migrate()
            await store.close()

        anyio.run(migrate)
        _check_crash_then_resume("postgres", f"{dsn()} {schema}", crash, tmp_path)
        runs = sql(
            f'SELECT count(*) FROM "{schema}".entries WHERE entry LIKE %s',
            '{"type":"job"%',
        )
        assert runs == [(4,)]  # one job entry a run: no run doubled or lost
        [(status, result)] = sql(
            f'SELECT status, result FROM "{schema}".jobs WHERE id = %s', "ticker"
        )
        assert (status, json.loads(str(result))) == ("completed", TOTAL)


# -- the example of docs/concepts.md ---------------------------------------------------

CONCEPTS = Path(__file__).parent.parent / "docs" / "concepts.md"
PROGRAM = re.compile(
    r"```python\n((?:(?!```).)*?)```\n\nOutput:\n\n```text\n(.*?)```", re.DOTALL
)


def test_the_continue_as_new_example_prints_what_the_page_says(tmp_path: Path) -> None:
    [(code, output)] = [
        found
        for found in PROGRAM.findall(CONCEPTS.read_text(encoding="utf-8"))
        if "continue_as_new" in found[0]
    ]
    script = tmp_path / "program.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == output
