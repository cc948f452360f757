"""A worker process of ``bench_recovery.py``, with the store's and worker's defaults.

``python _recovery_worker.py URL SIDE_FILE [--submit N]`` opens the store at
``URL`` (``sqlite:PATH`` or a PostgreSQL URL), optionally submits N ``hold`` jobs,
and runs a ``duron.Worker`` with default settings forever. Each ``hold`` job's
effect appends ``started JOB PID`` to ``SIDE_FILE`` and then sleeps for an hour,
so a job is "running" until its process dies.
"""

from __future__ import annotations

import argparse
import os

import anyio

import duron
from duron.contrib.storage import PostgresStore, SQLiteStore


@duron.effect
async def hold(job: str) -> None:
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(f"started {job} {os.getpid()}\n")
    await anyio.sleep(3600)


@duron.durable
async def holder(ctx: duron.Context, job: str) -> None:
    await ctx.run(hold, job)


async def main(url: str, submit: int) -> None:
    store: SQLiteStore | PostgresStore
    if url.startswith("sqlite:"):
        store = SQLiteStore(url.removeprefix("sqlite:"))
    else:
        store = PostgresStore(url, schema=os.environ.get("DURON_BENCH_SCHEMA", "duron"))
    async with store:
        if isinstance(store, PostgresStore):
            await store.migrate()
        for i in range(submit):
            await store.submit(holder.options(job_id=f"h{i}"), f"h{i}")
        async with duron.Worker(store, [holder], concurrency=max(32, submit)):
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("side")
    parser.add_argument("--submit", type=int, default=0)
    args = parser.parse_args()
    os.environ["DURON_SIDE_FILE"] = args.side
    anyio.run(main, args.url, args.submit)
