"""One PostgreSQL-store measurement, run in its own interpreter by ``bench_postgres.py``.

Modes (each prints one JSON object on its last line):

* ``seq``: one job of N sequential effects (the seed way,
  ``fn.invoke(store.log(id))``): time per effect; every effect is one round trip
  and one commit.
* ``many``: J jobs of S sequential effects each, submitted, then run by one
  in-process ``duron.Worker`` with concurrency J: time per effect when many jobs
  share each statement (group commit).
* ``submit``: fill the schema with J jobs of S effects for the ``worker`` runs.
* ``worker``: a worker process for the jobs-per-second runs: opens the store,
  prints ``ready``, waits for the go file, runs a ``Worker`` until no job is
  pending or running, and prints the wall-clock time it saw the queue empty.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import duron
from duron.contrib.storage import PostgresStore

_runs = 0


@duron.effect
async def step(i: int) -> int:
    global _runs
    _runs += 1
    return i + 1


@duron.durable
async def seq_flow(ctx: duron.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(step, i)
    return total


def expected(n: int) -> int:
    return n * (n + 1) // 2


def store_of(args: argparse.Namespace) -> PostgresStore:
    return PostgresStore(args.dsn, schema=args.schema, pool_size=8)


async def seq(args: argparse.Namespace) -> dict[str, Any]:
    store = store_of(args)
    # Warm up: connections, pydantic adapters, prepared statements.
    async with seq_flow.invoke(store.log("warmup")) as job:
        await job.start(10)
        await job.wait()
    before = store.flushes
    t0 = time.perf_counter()
    async with seq_flow.invoke(store.log("bench")) as job:
        await job.start(args.n)
        result = await job.wait()
    elapsed = time.perf_counter() - t0
    assert result == expected(args.n), result
    out = {"seconds": elapsed, "effects": args.n, "flushes": store.flushes - before}
    await store.close()
    return out


async def many(args: argparse.Namespace) -> dict[str, Any]:
    store = store_of(args)
    ids = [await store.submit(seq_flow, args.steps) for _ in range(args.jobs)]
    before, appends = store.flushes, store.appends
    t0 = time.perf_counter()
    async with duron.Worker(store, [seq_flow], concurrency=args.jobs):
        for job_id in ids:
            assert await store.result(job_id) == expected(args.steps)
    elapsed = time.perf_counter() - t0
    out = {
        "seconds": elapsed,
        "effects": args.jobs * args.steps,
        "flushes": store.flushes - before,
        "appends": store.appends - appends,
    }
    await store.close()
    return out


async def submit(args: argparse.Namespace) -> dict[str, Any]:
    store = store_of(args)
    for _ in range(args.jobs):
        await store.submit(seq_flow, args.steps)
    await store.close()
    return {"submitted": args.jobs}


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    store = store_of(args)
    await store.list_jobs(limit=1)  # connect before the clock starts
    print("ready", flush=True)
    while not args.go.exists():
        await anyio.sleep(0.002)
    async with duron.Worker(
        store, [seq_flow], concurrency=args.concurrency, poll_interval=0.02
    ) as w:
        while await store.list_jobs(["pending", "running"], limit=1):
            await anyio.sleep(0.01)
        done_at = time.time()
    out = {
        "done_at": done_at,
        "ended": w.ended,
        "runs": _runs,
        "flushes": store.flushes,
        "appends": store.appends,
    }
    await store.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["seq", "many", "submit", "worker"])
    p.add_argument("--dsn", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--go", type=Path)
    args = p.parse_args()
    fn = {"seq": seq, "many": many, "submit": submit, "worker": worker}[args.mode]
    out = anyio.run(fn, args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
