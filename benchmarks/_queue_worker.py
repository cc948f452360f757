"""The processes of ``bench_queues.py``.

``python _queue_worker.py SIDE URL submit N`` sets queue ``q`` (concurrency 4) and
submits N ``tiny`` jobs into it; ``... SIDE URL work`` runs a worker (8 slots,
serving ``q``) until the store has nothing left for it; ``... SIDE URL ticks`` runs
a worker with a schedule firing every second, until killed. Each job appends
``JOB start|end PID TIME`` lines to SIDE (its first and last effect), each tick
``tick JOB``.
"""

from __future__ import annotations

import os
import sys
import time

import anyio

import duron
from duron.contrib.storage import PostgresStore, SQLiteStore


def note(line: str) -> None:
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(line + "\n")


@duron.effect
async def bump(job: str, n: int, i: int) -> int:
    if i == 0:
        note(f"{job} start {os.getpid()} {time.time():.6f}")
    if i == 2:
        note(f"{job} end {os.getpid()} {time.time():.6f}")
    return n + i


@duron.durable
async def tiny(ctx: duron.Context, job: str, n: int) -> int:
    total = 0
    for i in range(3):
        total += await ctx.run(bump, job, n, i)
    return total


@duron.effect
async def tock(job: str) -> None:
    note(f"tick {job}")


@duron.durable
async def ticker(ctx: duron.Context) -> None:
    await ctx.run(tock, ctx.job_id)


def open_store(url: str) -> SQLiteStore | PostgresStore:
    if url.startswith("sqlite:"):
        return SQLiteStore(url.removeprefix("sqlite:"), lease=2.0)
    return PostgresStore(
        url, schema=os.environ.get("DURON_BENCH_SCHEMA", "duron"), lease=2.0
    )


async def main(url: str, mode: str, n: int) -> None:
    async with open_store(url) as store:
        if mode == "submit":
            if isinstance(store, PostgresStore):
                await store.migrate()
            await store.set_queue(duron.Queue("q", concurrency=4))
            for i in range(n):
                await store.submit(tiny.options(job_id=f"t{i}", queue="q"), f"t{i}", i)
            return
        if mode == "unlimit":
            await store.set_queue(duron.Queue("q"))  # the reference: no limit
            return
        if mode == "work":
            async with duron.Worker(
                store, [tiny], concurrency=8, queues=["q"], poll_interval=0.02
            ) as w:
                print("ready", flush=True)
                await w.wait_idle()
            return
        if isinstance(store, PostgresStore):
            await store.migrate()
        await store.add_schedule(duron.Schedule("every-second", "* * * * * *"), ticker)
        async with duron.Worker(store, [ticker], concurrency=8, poll_interval=0.05):
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[1]
    anyio.run(
        main, sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0
    )
