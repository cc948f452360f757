"""The jobs of the database outage tests (tests/outage_worker.py runs them).

Every run of an effect appends one line to the file ``DURON_SIDE_FILE`` names::

    run JOB OP TOKEN TIME

(``OP``: the operation's position in the job; ``TOKEN``: what the run returns;
``TIME``: when it finished), so that a test can tell which run's result the log
holds, and whether an effect ran again after its result was committed.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time

import anyio

import duron

STEPS = 5  # effects per stage; three stages: 15 effects a job


def note(line: str) -> None:
    # One short write to a file opened for appending: lines never interleave.
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(line + "\n")


def _ran(job: int, op: int) -> str:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    note(f"run {job} {op} {token} {time.time():.6f}")
    return token


@duron.effect
async def charge(job: int, op: int) -> str:
    await anyio.sleep(random.uniform(0.2, 0.6))
    return _ran(job, op)


@duron.effect
def render(job: int, op: int) -> str:
    """A plain function: Duron runs it in a worker thread."""
    time.sleep(random.uniform(0.2, 0.6))
    return _ran(job, op)


@duron.effect
async def ship(job: int, op: int) -> str:
    await anyio.sleep(random.uniform(0.1, 0.3))
    return _ran(job, op)


@duron.durable
async def order(ctx: duron.Context, job: int) -> list[str]:
    """15 effects of three kinds: one by one, five at once, one by one again,
    with a durable timer in between."""
    tokens = [await ctx.run(charge, job, op) for op in range(STEPS)]
    tokens += await asyncio.gather(
        *(ctx.run(render, job, op) for op in range(STEPS, 2 * STEPS))
    )
    await asyncio.sleep(0.05)
    tokens += [await ctx.run(ship, job, op) for op in range(2 * STEPS, 3 * STEPS)]
    return tokens


def job_id(job: int) -> str:
    return f"order-{job}"


async def unfinished(store: duron.JobStore) -> bool:
    """Whether a job is pending or running, asking again while the store is away."""
    while True:
        try:
            return bool(await store.list_jobs(["pending", "running"], limit=1))
        except duron.StoreUnavailableError:
            await anyio.sleep(0.2)


async def work(dsn: str, schema: str) -> None:
    from duron.contrib.storage import PostgresStore

    store = PostgresStore(dsn, schema=schema, lease=10, connect_timeout=2)
    async with duron.Worker(store, [order], concurrency=4, poll_interval=0.1) as w:
        while w.running or await unfinished(store):
            await anyio.sleep(0.1)
    await store.close()
