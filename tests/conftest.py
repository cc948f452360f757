"""Shared fixtures: every async test runs on asyncio and on trio (through anyio);
a ``backend`` test runs on every SQL job store (tests/store_backends.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import requires_postgres
from store_backends import Backend, PostgresBackend, SQLiteBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=requires_postgres)],
)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    """The test's database on one SQL store; every store object it made is closed
    at the end (and a PostgreSQL schema dropped)."""
    b: Backend = (
        SQLiteBackend(tmp_path / "jobs.db")
        if request.param == "sqlite"
        else PostgresBackend()
    )
    try:
        yield b
    finally:
        await b.aclose()
