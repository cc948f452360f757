"""Shared fixtures: an async test runs on asyncio, and on trio too where the host
matters (``pytestmark = pytest.mark.both_hosts``: effects, host input and output,
stores, workers); a ``backend`` test runs on every SQL job store
(tests/store_backends.py).

Durable code always runs on Duron's own loop whatever the host, so a test of what
it records and replays learns nothing more on trio.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import requires_postgres
from store_backends import Backend, PostgresBackend, SQLiteBackend

# The pydantic-ai releases the extra supports need Python 3.11 (the extra installs
# nothing on 3.10): their tests cannot run there.
collect_ignore: list[str] = (
    [
        "test_pydantic_ai.py",
        "test_pydantic_ai_crash.py",
        "test_pydantic_ai_docs.py",
        "test_pydantic_ai_verify.py",
        "pydantic_ai_jobs.py",
    ]
    if sys.version_info < (3, 11)
    else []
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_hosts: run the async test on asyncio and on trio"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        if "anyio_backend" in str(mark.args[0]):
            return  # the test picks its hosts itself
    both = metafunc.definition.get_closest_marker("both_hosts") is not None
    metafunc.parametrize("anyio_backend", ["asyncio", "trio"] if both else ["asyncio"])


@pytest.fixture
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
