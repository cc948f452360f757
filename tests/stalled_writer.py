"""The process of the stalled-writer test (tests/test_stalled_writer.py).

``python tests/stalled_writer.py DB SIDE_FILE`` runs job ``j`` of the SQLite store
``DB`` the seed way (``fn.invoke(store.log("j"))``), with a one-second lease,
waiting for the lease while another process holds it. Each effect appends its name
and this process's pid to ``SIDE_FILE``. Prints ``finished RESULT`` or
``lease lost: MESSAGE``.
"""

from __future__ import annotations

import asyncio
import os
import sys

import anyio

import duron
from duron.contrib.storage import SQLiteStore

LEASE = 1.0


@duron.effect
async def mark(what: str) -> int:
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(f"{what} {os.getpid()}\n")
    return os.getpid()


@duron.durable
async def sleeper(ctx: duron.Context) -> str:
    await ctx.run(mark, "before")
    await asyncio.sleep(2.0)
    await ctx.run(mark, "after")
    return "done"


async def main(db: str) -> None:
    store = SQLiteStore(db, lease=LEASE)
    try:
        while True:
            try:
                async with sleeper.invoke(store.log("j")) as job:
                    await job.start()
                    print("finished", await job.wait(), flush=True)
                    return
            except duron.LogLockedError:
                await anyio.sleep(0.05)  # the other process's lease is live
            except duron.LeaseLostError as lost:
                print("lease lost:", lost, flush=True)
                return
    finally:
        await store.close()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[2]
    anyio.run(main, sys.argv[1])
