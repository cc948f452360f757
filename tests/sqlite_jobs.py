"""The worker process of the multi-process SQLite worker test.

``python tests/sqlite_jobs.py DB SIDE_FILE`` runs a worker on the SQLite store
``DB`` until no job is pending or running; the jobs and what their runs append to
``SIDE_FILE`` are tests/worker_jobs.py's.
"""

from __future__ import annotations

import os
import sys

import anyio
from worker_jobs import LEASE, track_epochs, work_until_done

from duron.contrib.storage import SQLiteStore


async def work(db: str) -> None:
    store = SQLiteStore(db, lease=LEASE)
    track_epochs(store)
    await work_until_done(store)


if __name__ == "__main__":
    os.environ["DURON_SIDE_FILE"] = sys.argv[2]
    anyio.run(work, sys.argv[1])
