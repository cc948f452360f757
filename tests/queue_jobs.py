"""The worker process of the queue tests (tests/test_queue_processes.py).

``python tests/queue_jobs.py SIDE_FILE sqlite PATH`` or ``... postgres DSN SCHEMA``
runs a worker (8 slots) of :func:`step_job` until it gets SIGTERM. It appends
``up PID`` to SIDE_FILE once the worker runs; each run of the effect appends
``start JOB TIME`` when it begins and ``end JOB TIME`` when it ends (TIME:
``time.time()``), so the test can count how many ran at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING

import anyio

import duron
from duron.contrib.storage import PostgresStore, SQLiteStore

if TYPE_CHECKING:
    from duron._jobstore import JobStore

LEASE = 5.0


def note(line: str) -> None:
    # One short write to a file opened for appending: lines never interleave.
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(line + "\n")


@duron.effect
async def step(job: str, n: int) -> int:
    note(f"start {job} {time.time():.6f}")
    await anyio.sleep(0.05)
    note(f"end {job} {time.time():.6f}")
    return n


@duron.durable
async def step_job(ctx: duron.Context, job: str, n: int) -> int:
    return await ctx.run(step, job, n)


def open_store(argv: list[str]) -> JobStore:
    if argv[0] == "sqlite":
        return SQLiteStore(argv[1], lease=LEASE)
    return PostgresStore(argv[1], schema=argv[2], lease=LEASE, pool_size=3)


async def serve(target: list[str]) -> None:
    store = open_store(target)
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with duron.Worker(store, [step_job], concurrency=8, poll_interval=0.02):
            note(f"up {os.getpid()}")
            async for _ in signals:
                break
    await store.close()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[1]
    anyio.run(serve, sys.argv[2:])
