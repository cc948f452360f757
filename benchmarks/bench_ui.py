"""How fast the web view (``duron ui``) answers on large inputs.

* the jobs list of a SQLite store of ``--jobs`` jobs (default 100,000): the first
  page, newest first, with the counts per status;
* the page of a job whose log holds ``--entries`` entries (default 100,000): read
  and decoded the first time, then again once the log is read (a live refresh
  decodes only what was appended).

Each figure is the median of ``--repeat`` requests through Starlette's test client
(in process, no socket; tests/asgi_client.py). The floor beside the job page is decoding the same entries alone.
Target: each page under one second on this machine.

    python benchmarks/bench_ui.py [--jobs N] [--entries N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import orjson

import duron
from duron._entries import JobStarted, OpCompleted, OpStarted
from duron._log import decode_entry
from duron._ui.app import make_app
from duron._ui.sources import FileSource, open_source
from duron.contrib.storage import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from asgi_client import ASGIClient


@duron.durable
async def job(ctx: duron.Context, n: int) -> int:
    return n


async def fill_store(db: Path, jobs: int) -> None:
    store = SQLiteStore(db)
    sem = anyio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            await store.submit(job.options(job_id=f"job-{i:06}"), i)

    async with anyio.create_task_group() as tg:
        for i in range(jobs):
            tg.start_soon(one, i)
    await store.close()


def write_log(path: Path, entries: int) -> None:
    t0 = time.time()
    lines = [orjson.dumps(JobStarted("big", {"n": 1}, "s", t0).to_json())]
    for i in range((entries - 1) // 2):
        lines.append(
            orjson.dumps(OpStarted(i, t0 + i, "effect", "work", {"i": i}).to_json())
        )
        lines.append(orjson.dumps(OpCompleted(i, t0 + i + 0.5, {"ok": i}).to_json()))
    path.write_bytes(b"\n".join(lines) + b"\n")


async def timed(client: ASGIClient, url: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        got = await client.get(url)
        times.append(time.perf_counter() - start)
        assert got.status_code == 200, got.text[:500]
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    anyio.run(run, args)
    return 0


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp, "jobs.db")
        start = time.perf_counter()
        await fill_store(db, args.jobs)
        print(f"store of {args.jobs:,} jobs made in {time.perf_counter() - start:.1f}s")
        async with ASGIClient(make_app(open_source(f"sqlite:///{db}"))) as client:
            first = await timed(client, "/", args.repeat)
            later = await timed(client, "/?status=pending&id=job-05", args.repeat)
        print(f"jobs list, first page + counts:       {first * 1e3:8.1f} ms")
        print(f"jobs list, status + id prefix filter: {later * 1e3:8.1f} ms")

        log = Path(tmp, "big.jsonl")
        write_log(log, args.entries)
        data = log.read_bytes().splitlines()
        start = time.perf_counter()
        for i, raw in enumerate(data):
            decode_entry(raw, job="big", offset=i)
        floor = time.perf_counter() - start
        async with ASGIClient(make_app(FileSource(log))) as client:
            cold = await timed(client, "/job?id=big.jsonl", 1)
            warm = await timed(client, "/job?id=big.jsonl", args.repeat)
            window = await timed(client, "/job?id=big.jsonl&from=40000", args.repeat)
        print(
            f"job of {len(data):,} entries, first read:   {cold * 1e3:8.1f} ms"
            f"  (floor: decoding them alone {floor * 1e3:.1f} ms)"
        )
        print(f"job page again (nothing appended):  {warm * 1e3:8.1f} ms")
        print(f"job page, rows 40,000-40,199:       {window * 1e3:8.1f} ms")
        worst = max(first, later, cold, warm, window)
        print(f"target: every page under 1000 ms; worst {worst * 1e3:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
