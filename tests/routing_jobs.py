"""Two kinds of job, and the worker process of the routing tests
(tests/test_routing.py).

``python tests/routing_jobs.py SIDE_FILE FUNCTIONS sqlite PATH`` or ``... FUNCTIONS
postgres DSN SCHEMA`` runs a worker that has the durable functions FUNCTIONS names
(comma-separated: ``email_job``, ``gpu_job``) until it gets SIGTERM, then stops it
and exits. It appends ``up PID`` to SIDE_FILE once the worker runs, and every run
of a job's effect appends ``ran FUNCTION JOB PID``.
"""

from __future__ import annotations

import os
import signal
import sys
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
async def send(kind: str, n: int) -> int:
    note(f"ran {kind} {n} {os.getpid()}")
    await anyio.sleep(0.01)
    return n


@duron.durable
async def email_job(ctx: duron.Context, n: int) -> int:
    return await ctx.run(send, "email_job", n)


@duron.durable
async def gpu_job(ctx: duron.Context, n: int) -> int:
    return await ctx.run(send, "gpu_job", n)


FUNCTIONS = {"email_job": email_job, "gpu_job": gpu_job}


def open_store(argv: list[str]) -> JobStore:
    if argv[0] == "sqlite":
        return SQLiteStore(argv[1], lease=LEASE)
    return PostgresStore(argv[1], schema=argv[2], lease=LEASE, pool_size=2)


async def serve(names: list[str], target: list[str]) -> None:
    store = open_store(target)
    fns = [FUNCTIONS[name] for name in names]
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with duron.Worker(store, fns, poll_interval=0.05):
            note(f"up {os.getpid()}")
            async for _ in signals:
                break
    await store.close()


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[1]
    anyio.run(serve, sys.argv[2].split(","), sys.argv[3:])
