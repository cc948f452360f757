"""The jobs the multi-process worker tests run, and how their worker processes
report what ran (tests/sqlite_jobs.py and tests/postgres_jobs.py start them).

Every run of the ``record`` effect appends one line ``run JOB OP TOKEN EPOCH`` to
the file ``DURON_SIDE_FILE`` names and returns the token, EPOCH being the lease
epoch under which this process runs the job (``track_epochs``), so a test can
compare what ran with what the log recorded.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import anyio

import duron

if TYPE_CHECKING:
    from collections.abc import Iterable

    from duron.contrib.storage import PostgresStore, SQLiteStore

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


def track_epochs(store: SQLiteStore | PostgresStore) -> None:
    """Note in ``EPOCHS`` the epoch of every job the store claims."""
    claim = store.claim

    async def claiming(
        limit: int,
        *,
        functions: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
    ) -> list[duron.Claim]:
        claims = await claim(limit, functions=functions, queues=queues)
        for c in claims:
            EPOCHS[c.job_id] = c.epoch
        return claims

    store.claim = claiming  # type: ignore[method-assign]


async def work_until_done(store: SQLiteStore | PostgresStore) -> None:
    """Run a worker until no job is pending or running and it runs none itself,
    then close the store. (A worker stopped past its leases still runs the jobs
    it lost when it continues, while the store lists them as another's or as
    finished: it stops only once each has tried to write and been refused.)"""
    async with duron.Worker(store, [chain], concurrency=16, poll_interval=0.05) as w:
        await w.wait_idle()
    await store.close()
