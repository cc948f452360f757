"""The workloads of the job-store benchmarks, run in a fresh interpreter each.

``_sqlite_worker.py`` and ``_postgres_worker.py`` say how to open their store and
which of its counters to report; the modes are the same for both (each prints one
JSON object on its last line):

* ``seq``: one job of N sequential effects (the seed way,
  ``fn.invoke(store.log(id))``), after an untimed warm-up job: time per effect.
* ``many``: J jobs of S sequential effects each, submitted, then run by one
  in-process ``duron.Worker`` with concurrency J: time per effect when many jobs
  share each commit (group commit).
* ``submit``: fill a store with J jobs of S effects for the ``worker`` runs.
* ``worker``: a worker process for the jobs-per-second runs: opens the store,
  prints ``ready``, waits for the go file, runs a ``Worker`` until no job is
  pending or running, and prints the wall-clock time it saw the queue empty.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

import duron

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


@dataclass(frozen=True)
class Target:
    """One store under measurement.

    Attributes:
        open: The store for a mode (``seq``, ``many``, ``submit``, ``worker``).
        counters: The store's own counters (commits, flushes...): ``seq`` and
            ``many`` report how much they grew, ``worker`` their final values.
        warmup: Effects in the untimed job ``seq`` runs first.
        default_n: Default ``--n``.
    """

    open: Callable[[argparse.Namespace, str], Any]
    counters: Callable[[Any], dict[str, int]]
    warmup: int
    default_n: int


def _grown(target: Target, store: Any, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in target.counters(store).items()}


async def seq(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    store = target.open(args, "seq")
    # Warm up: schema, thread or connections, pydantic adapters.
    async with seq_flow.invoke(store.log("warmup")) as job:
        await job.start(target.warmup)
        await job.wait()
    before = target.counters(store)
    t0 = time.perf_counter()
    async with seq_flow.invoke(store.log("bench")) as job:
        await job.start(args.n)
        result = await job.wait()
    elapsed = time.perf_counter() - t0
    assert result == expected(args.n), result
    out = {"seconds": elapsed, "effects": args.n, **_grown(target, store, before)}
    await store.close()
    return out


async def many(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    store = target.open(args, "many")
    ids = [await store.submit(seq_flow, args.steps) for _ in range(args.jobs)]
    before = target.counters(store)
    t0 = time.perf_counter()
    async with duron.Worker(store, [seq_flow], concurrency=args.jobs):
        for job_id in ids:
            assert await store.result(job_id) == expected(args.steps)
    elapsed = time.perf_counter() - t0
    out = {
        "seconds": elapsed,
        "effects": args.jobs * args.steps,
        "jobs": args.jobs,
        **_grown(target, store, before),
    }
    await store.close()
    return out


async def submit(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    store = target.open(args, "submit")
    for _ in range(args.jobs):
        await store.submit(seq_flow, args.steps)
    await store.close()
    return {"submitted": args.jobs}


async def worker(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    store = target.open(args, "worker")
    await store.list_jobs(limit=1)  # open or connect before the clock starts
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
        **target.counters(store),
    }
    await store.close()
    return out


MODES = {"seq": seq, "many": many, "submit": submit, "worker": worker}


def main(target: Target, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Parse the mode and its sizes (``store_args`` adds the store's own options),
    run it, print its JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=list(MODES))
    store_args(p)
    p.add_argument("--n", type=int, default=target.default_n)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--go", type=Path)
    args = p.parse_args()
    out = anyio.run(MODES[args.mode], target, args)
    print(json.dumps(out), flush=True)
