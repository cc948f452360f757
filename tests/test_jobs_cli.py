"""``duron jobs list|show|cancel|resume|fork|prune`` on a SQLite store."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import orjson
import pytest

import duron
from duron._cli import main
from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path


@duron.effect
async def step(i: int) -> int:
    return i * 10


@duron.durable
async def steps(ctx: duron.Context, n: int) -> list[int]:
    return [await ctx.run(step, i) for i in range(n)]


@duron.durable
async def ghost(ctx: duron.Context) -> None:
    return None


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store with completed jobs ``done`` and ``todo``, a job ``lost`` a worker
    of an older Duron failed because it did not know its function, and a pending
    ``waiting``."""
    path = tmp_path / "jobs.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.submit(steps.options(job_id="done"), 3)
        async with steps.invoke(store.log("done")) as job:
            await job.resume()
            await job.wait()
        await store.submit(steps.options(job_id="todo"), 1)
        await store.submit(ghost.options(job_id="lost"))
        async with duron.Worker(store, [steps], poll_interval=0.05) as w:
            await store.result("todo")
            assert w.ended == 1
        await fail_as_unknown(store, "lost")
        await store.submit(steps.options(job_id="waiting"), 2)
        await store.close()

    anyio.run(fill)
    return path


async def fail_as_unknown(store: SQLiteStore, job_id: str) -> None:
    """What a worker of an older Duron did to a job of a function it did not have
    (workers now claim only their own functions)."""
    (claim,) = await store.claim(1, functions=["ghost"])
    error = duron.UnknownFunctionError(job=job_id, function="ghost", known=("steps",))
    await store.fail(job_id, claim.epoch, error)


def url(path: Path) -> str:
    return f"sqlite:///{path}"  # an absolute path: four slashes in all


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["jobs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "list", url(db))
    assert code == 0
    assert re.fullmatch(
        r"waiting: waiting: no job of steps is running; one last ran at "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: is a worker that has steps up\?\n",
        err,
    ), err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "UPDATED", "CALL"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("done", "completed", "steps(n=3)"),
        ("todo", "completed", "steps(n=1)"),
        ("lost", "failed", "ghost()"),
        ("waiting", "pending", "steps(n=2)"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[2]) for r in rows)

    code, out, _ = run(capsys, "list", url(db), "--status", "completed", "--json")
    assert code == 0
    jobs = [orjson.loads(line) for line in out.splitlines()]
    assert [(j["id"], j["result"]) for j in jobs] == [
        ("done", [0, 10, 20]),
        ("todo", [0]),
    ]
    code, out, _ = run(
        capsys,
        "list",
        url(db),
        "--status",
        "failed",
        "--status",
        "pending",
        "--limit",
        "1",
    )
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["lost"]


def stored(db: Path, job_id: str) -> list[bytes]:
    """The job's entries as stored, read with sqlite3 itself."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT CAST(entry AS BLOB) FROM entries WHERE job_id = ? ORDER BY seq",
            (job_id,),
        ).fetchall()
    return [bytes(raw) for (raw,) in rows]


def test_list_with_sizes(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "list", url(db), "--sizes")
    assert code == 0
    assert err.startswith("waiting: waiting: ")  # the pending job's hint
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATUS",
        "UPDATED",
        "RUNS",
        "ENTRIES",
        "BYTES",
        "CALL",
    ]
    got = {r[0]: (r[3], r[4], r[5]) for r in (line.split() for line in lines[1:])}
    want = {}
    for job_id in ("done", "todo", "lost", "waiting"):
        raws = stored(db, job_id)
        want[job_id] = ("1", str(len(raws)), f"{sum(map(len, raws)):,}")
    assert got == want
    assert want["done"][1] == "5"

    code, out, _ = run(capsys, "list", url(db), "--sizes", "--json", "--limit", "1")
    [job] = [orjson.loads(line) for line in out.splitlines()]
    raws = stored(db, "done")
    assert (job["id"], job["entries"], job["bytes"]) == (
        "done",
        len(raws),
        sum(map(len, raws)),
    )


def test_show(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", url(db), "done", "--log")
    assert (code, err) == (0, "")
    size = sum(len(raw) for raw in stored(db, "done"))
    head, log = out.split(f"log:     5 entries, {size:,} bytes\n")
    fields = dict(line.split(":", 1) for line in head.splitlines())
    assert {
        k: v.strip() for k, v in fields.items() if k not in ("created", "updated")
    } == {
        "job": "done",
        "call": "steps(n=3)",
        "status": "completed",
        "result": "[0,10,20]",
    }
    entries = [line.split(None, 1) for line in log.splitlines()]
    assert [int(seq) for seq, _ in entries] == [0, 1, 2, 3, 4]
    assert [orjson.loads(e)["type"] for _, e in entries] == [
        "job",
        "done",
        "done",
        "done",
        "end",
    ]

    code, out, _ = run(capsys, "show", url(db), "lost", "--json")
    assert code == 0
    data = orjson.loads(out)
    assert (data["status"], data["entries"], data["error"]["type"]) == (
        "failed",
        1,
        "duron._errors.UnknownFunctionError",
    )


def test_cancel(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "cancel", url(db), "waiting") == (
        0,
        "job waiting cancelled\n",
        "",
    )
    assert run(capsys, "cancel", url(db), "done") == (
        1,
        "job done already ended (completed); nothing to cancel\n",
        "",
    )


def test_resume(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "resume", url(db), "lost") == (
        0,
        "job lost is pending: a worker will resume it\n",
        "",
    )
    code, out, _ = run(capsys, "list", url(db), "--status", "pending")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["lost", "waiting"]
    code, out, err = run(capsys, "resume", url(db), "done")
    assert (code, out) == (2, "")
    assert err == (
        "duron jobs: error: job done ended (completed): it cannot run again; fork it "
        "to re-run it from a step (store.fork / `duron jobs fork`)\n"
    )


def test_fork(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fork", url(db), "done", "--at", "2", "--id", "again") == (
        0,
        "again\n",
        "",
    )
    code, out, _ = run(capsys, "fork", url(db), "done", "--at", "0")
    assert code == 0
    new_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{24}", new_id)

    async def check() -> None:
        store = SQLiteStore(db)
        info = await store.get("again")
        assert (info.status, info.forked_from) == ("pending", "done")
        assert len([e async for e in store.read_log("again")]) == 3
        assert len([e async for e in store.read_log(new_id)]) == 1
        await store.close()

    anyio.run(check)


def test_prune(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "prune", url(db), "--older-than", "30d") == (
        0,
        "deleted 0 jobs\n",
        "",
    )
    assert run(
        capsys, "prune", url(db), "--older-than", "0s", "--status", "failed"
    ) == (
        0,
        "deleted 1 job\n",
        "",
    )
    assert run(capsys, "prune", url(db), "--older-than", "0") == (
        0,
        "deleted 2 jobs\n",
        "",
    )
    code, out, _ = run(capsys, "list", url(db))
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["waiting"]


def test_errors(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert run(capsys, "show", url(db), "nope") == (
        2,
        "",
        f"duron jobs: error: no job 'nope' in {db}; list the store's jobs with "
        "store.list_jobs() or `duron jobs list`\n",
    )
    assert run(capsys, "list", url(missing)) == (
        2,
        "",
        f"duron jobs: error: {missing}: no such file; a store is created by "
        "SQLiteStore(path) in the application that submits jobs\n",
    )
    assert not missing.exists()
    assert run(capsys, "list", "sqlite://jobs.db") == (
        2,
        "",
        "duron jobs: error: 'sqlite://jobs.db': a SQLite URL has three slashes "
        "before a relative path (sqlite:///jobs.db) and four before an absolute one "
        "(sqlite:////var/lib/app/jobs.db)\n",
    )
    assert run(capsys, "list", "mysql://host/db") == (
        2,
        "",
        "duron jobs: error: 'mysql://host/db': unknown store scheme 'mysql'; Duron "
        "knows sqlite:///path.db and postgresql://user@host/dbname\n",
    )
    assert run(capsys, "list", str(db)) == (
        2,
        "",
        f"duron jobs: error: {str(db)!r} is not a store URL; write "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db\n",
    )
    with pytest.raises(SystemExit):
        main(["jobs", "prune", url(db), "--older-than", "soon"])
    assert (
        "'soon' is not a duration: write 30d, 12h, 15m, 45s or seconds"
        in capsys.readouterr().err
    )


def test_relative_urls_from_a_shell(db: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "duron", "jobs", "list", f"sqlite:///{db.name}"],
        cwd=db.parent,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert [line.split()[0] for line in out.stdout.splitlines()] == [
        "ID",
        "done",
        "todo",
        "lost",
        "waiting",
    ]


@duron.durable
async def boom(ctx: duron.Context) -> None:
    raise ValueError("really failed")


def test_resume_storage_failures_requeues_the_jobs_an_outage_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What older Duron left behind: a job marked failed with a StorageError, its
    # log without an end. Next to it, a job whose code really failed, and one a
    # worker failed for another reason: both stay as they are.
    path = tmp_path / "jobs.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.submit(boom.options(job_id="broken"))
        await store.submit(ghost.options(job_id="unknown"))
        async with duron.Worker(store, [boom], poll_interval=0.05):
            with pytest.raises(ValueError, match="really failed"):
                await store.result("broken")
        await fail_as_unknown(store, "unknown")
        await store.submit(steps.options(job_id="stranded"), 2)
        (claim,) = await store.claim(5)
        await store.fail(
            "stranded",
            claim.epoch,
            duron.StorageError(
                store="jobs.db", operation="append", detail="terminating connection"
            ),
        )
        await store.close()

    anyio.run(fill)
    code, out, err = run(capsys, "resume", url(path), "--storage-failures")
    assert (code, err) == (0, "")
    assert out == (
        "job stranded is pending: a worker will resume it\n"
        "1 job failed by storage requeued\n"
    )

    async def statuses() -> dict[str, str]:
        store = SQLiteStore(path)
        try:
            return {info.id: info.status for info in await store.list_jobs()}
        finally:
            await store.close()

    assert anyio.run(statuses) == {
        "stranded": "pending",
        "broken": "failed",
        "unknown": "failed",
    }
    code, out, err = run(capsys, "resume", url(path))
    assert (code, out) == (2, "")
    assert err == (
        "duron jobs: error: name one job to resume, or --storage-failures for every "
        "job failed by its storage (not both)\n"
    )
