"""Jobs for the multi-process PostgreSQL worker test, and the worker that runs them.

``python tests/postgres_jobs.py DSN SCHEMA SIDE_FILE [blind]`` runs a worker on
the PostgreSQL store in ``SCHEMA`` until no job is pending or running (``blind``:
its heartbeats never report a lost lease, so only the store's fence can stop it
from writing to a job it lost). It appends to ``SIDE_FILE``:

* ``run JOB OP TOKEN EPOCH`` for every run of the ``record`` effect (which returns
  the token), EPOCH being the lease epoch under which this process runs the job;
* ``refused JOB EPOCH`` for every append the store refused (in its group-commit
  statement) because the job's lease was taken over,

so a test can compare what ran, and what was refused, with what the log holds.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio

import duron
from duron.contrib.storage import PostgresStore

if TYPE_CHECKING:
    from duron.contrib._postgres_engine import AppendRequest

LEASE = 1.0
STEPS = 6
EPOCHS: dict[str, int] = {}  # job id -> the epoch this process claimed it at


def note(line: str) -> None:
    # One short write to a file opened for appending: lines never interleave.
    with open(os.environ["DURON_SIDE_FILE"], "a") as f:
        f.write(line + "\n")


@duron.effect
async def record(job: int, op: int) -> str:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    note(f"run {job} {op} {token} {EPOCHS[job_id(job)]}")
    await anyio.sleep(0.02)
    return token


@duron.durable
async def chain(ctx: duron.Context, job: int) -> int:
    for op in range(STEPS):
        await ctx.run(record, job, op)
    return expected(job)


def job_id(job: int) -> str:
    return f"job-{job}"


def expected(job: int) -> int:
    return job * 1000 + STEPS


async def work(dsn: str, schema: str, blind: bool) -> None:
    store = PostgresStore(dsn, schema=schema, lease=LEASE)
    claim = store.claim
    heartbeat = store.heartbeat
    engine = store._engine
    flush = engine._flush

    async def claiming(limit: int) -> list[duron.Claim]:
        claims = await claim(limit)
        for c in claims:
            EPOCHS[c.job_id] = c.epoch
        return claims

    async def blind_heartbeat(job_ids: Iterable[str]) -> duron.Heartbeat:
        # Never told of a lost lease: only the fence stops its stale writes.
        return duron.Heartbeat(cancel=(await heartbeat(job_ids)).cancel)

    async def flushing(batch: list[AppendRequest]) -> None:
        await flush(batch)
        for req in batch:
            if isinstance(req.error, duron.LeaseLostError):
                note(f"refused {req.job} {req.epoch}")

    store.claim = claiming  # type: ignore[method-assign]
    if blind:
        store.heartbeat = blind_heartbeat  # type: ignore[method-assign]
    engine._flush = flushing  # type: ignore[method-assign]
    async with duron.Worker(store, [chain], concurrency=16, poll_interval=0.05):
        while await store.list_jobs(["pending", "running"], limit=1):
            await anyio.sleep(0.05)
    await store.close()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[3]
    anyio.run(work, sys.argv[1], sys.argv[2], sys.argv[4:] == ["blind"])
