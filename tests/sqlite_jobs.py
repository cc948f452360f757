"""Jobs for the multi-process worker test, and the worker process that runs them.

``python tests/sqlite_jobs.py DB SIDE_FILE`` runs a worker on the SQLite store ``DB``
until no job is pending or running. Every run of the ``record`` effect appends one
line ``job op token`` to ``SIDE_FILE`` and returns the token, so a test can compare
what ran with what the log recorded.
"""

from __future__ import annotations

import os
import secrets
import sys

import anyio

import duron
from duron.contrib.storage import SQLiteStore

LEASE = 1.0
STEPS = 6


@duron.effect
async def record(job: int, op: int) -> str:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(f"{job} {op} {token}\n")
    await anyio.sleep(0.02)
    return token


@duron.durable
async def chain(ctx: duron.Context, job: int) -> int:
    for op in range(STEPS):
        await ctx.run(record, job, op)
    return expected(job)


def expected(job: int) -> int:
    return job * 1000 + STEPS


async def work(db: str) -> None:
    store = SQLiteStore(db, lease=LEASE)
    async with duron.Worker(store, [chain], concurrency=16, poll_interval=0.05):
        while await store.list_jobs(["pending", "running"], limit=1):
            await anyio.sleep(0.05)
    await store.close()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[2]
    anyio.run(work, sys.argv[1])
