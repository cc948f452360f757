"""Both SQL stores are JobStores, as mypy checks this module (a protocol narrower than
the stores would reject real calls made through it)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

    from duron import JobStore
    from duron.contrib.storage import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


def as_job_stores(sqlite: SQLiteStore, postgres: PostgresStore) -> list[JobStore]:
    return [sqlite, postgres]


async def list_and_prune(store: JobStore) -> int:
    await store.list_jobs(["pending", "running"])
    await store.list_jobs("completed")
    return await store.prune(older_than=timedelta(days=1))


async def test_a_store_used_through_the_protocol(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        assert await list_and_prune(store) == 0
    finally:
        await store.close()
