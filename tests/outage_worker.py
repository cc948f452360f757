"""The worker process of the database outage test.

``python tests/outage_worker.py DSN SCHEMA SIDE_FILE LOG_FILE`` runs a worker on the
PostgreSQL store in ``SCHEMA`` until no job is pending or running, riding out the
outages the test causes meanwhile. It logs the ``duron`` logger (INFO and up) to
``LOG_FILE``; the jobs (tests/outage_jobs.py) note every effect run in
``SIDE_FILE``.
"""

from __future__ import annotations

import logging
import os
import sys

import anyio
from outage_jobs import work

if __name__ == "__main__":
    dsn, schema, side, log = sys.argv[1:5]
    os.environ["DURON_SIDE_FILE"] = side
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("duron")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    anyio.run(work, dsn, schema)
