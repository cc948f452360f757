"""The worker process of the multi-process PostgreSQL worker test.

``python tests/postgres_jobs.py DSN SCHEMA SIDE_FILE [blind]`` runs a worker on
the PostgreSQL store in ``SCHEMA`` until no job is pending or running (``blind``:
its heartbeats never report a lost lease, so only the store's fence can stop it
from writing to a job it lost). The jobs are tests/worker_jobs.py's; it appends to
``SIDE_FILE``:

* ``run JOB OP TOKEN EPOCH`` for every run of the ``record`` effect (which returns
  the token), EPOCH being the lease epoch under which this process runs the job;
* ``refused JOB EPOCH`` for every append the store refused (in its group-commit
  statement) because the job's lease was taken over,

so a test can compare what ran, and what was refused, with what the log holds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio
from worker_jobs import LEASE, note, track_epochs, work_until_done

import duron
from duron.contrib.storage import PostgresStore

if TYPE_CHECKING:
    from duron.contrib._postgres_engine import AppendRequest


async def work(dsn: str, schema: str, blind: bool) -> None:
    store = PostgresStore(dsn, schema=schema, lease=LEASE)
    heartbeat = store.heartbeat
    engine = store._engine
    flush = engine._flush

    async def blind_heartbeat(job_ids: Iterable[str]) -> duron.Heartbeat:
        # Never told of a lost lease: only the fence stops its stale writes.
        return duron.Heartbeat(cancel=(await heartbeat(job_ids)).cancel)

    async def flushing(batch: list[AppendRequest]) -> None:
        await flush(batch)
        for req in batch:
            if isinstance(req.error, duron.LeaseLostError):
                note(f"refused {req.job} {req.epoch}")

    track_epochs(store)
    if blind:
        store.heartbeat = blind_heartbeat  # type: ignore[method-assign]
    engine._flush = flushing  # type: ignore[method-assign]
    await work_until_done(store)


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[3]
    anyio.run(work, sys.argv[1], sys.argv[2], sys.argv[4:] == ["blind"])
