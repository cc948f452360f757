"""A worker process of the multi-process child-jobs test.

``python tests/child_jobs_worker.py DB SIDE_FILE`` runs a worker (lease 1 s) on
the SQLite store ``DB`` for ``order`` and ``ship`` until it is killed or the
store has nothing left for it. Each shipment appends ``ITEM PID`` to SIDE_FILE.
"""

from __future__ import annotations

import asyncio
import os
import sys

import anyio

import duron
from duron.contrib.storage import SQLiteStore


@duron.effect
async def ship_item(item: str) -> str:
    await anyio.sleep(0.2)
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(f"{item} {os.getpid()}\n")
    return f"shipped {item}"


@duron.durable
async def ship(ctx: duron.Context, item: str) -> str:
    return await ctx.run(ship_item, item)


@duron.durable
async def order(ctx: duron.Context, items: list[str]) -> list[str]:
    children = [await ctx.start_job(ship, item) for item in items]
    return list(await asyncio.gather(*children))


async def main(db: str) -> None:
    async with SQLiteStore(db, lease=1.0) as store:
        worker = duron.Worker(
            store, [order, ship], concurrency=2, poll_interval=0.05, suspend_after=0.1
        )
        async with worker:
            print("ready", flush=True)
            await worker.wait_idle()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[2]
    anyio.run(main, sys.argv[1])
