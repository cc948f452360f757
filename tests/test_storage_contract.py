"""The ``LogStorage`` contract: one suite, run against every backend.

A backend joins the suite by adding one entry to ``BACKENDS``: a class whose
``make_storage(tmp_path, name)`` returns a handle on the log called ``name``. The
first call creates a fresh, empty log; calling it again with the same arguments
returns a NEW handle on the SAME log, which is how the suite reopens a log or plays
a second writer.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol, cast

import anyio
import orjson
import pytest

from duron import LogLockedError, LogStorage, StorageError
from duron.contrib.storage import (
    FileLogStorage,
    MemoryLogStorage,
    PostgresStore,
    SQLiteStore,
)

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import (
    drop_schema,
    dsn,
    new_schema,
    requires_postgres,
)

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


class Backend(Protocol):
    def make_storage(self, tmp_path: Path, name: str) -> LogStorage: ...


class MemoryBackend:
    """Memory logs live in their handle, so reopening hands back the same object."""

    def __init__(self) -> None:
        self._logs: dict[tuple[Path, str], MemoryLogStorage] = {}

    def make_storage(self, tmp_path: Path, name: str) -> LogStorage:
        key = (tmp_path, name)
        if key not in self._logs:
            self._logs[key] = MemoryLogStorage(label=name)
        return self._logs[key]


class FileBackend:
    def make_storage(self, tmp_path: Path, name: str) -> LogStorage:
        return FileLogStorage(tmp_path / f"{name}.jsonl")


class SQLiteBackend:
    """Every handle comes from its own store object: a lease owner of its own, as
    another process would be."""

    def make_storage(self, tmp_path: Path, name: str) -> LogStorage:
        return SQLiteStore(tmp_path / "jobs.db").log(name)


class PostgresBackend:
    """Every handle comes from its own store object (a lease owner of its own, as
    another machine would be); the tables live in a schema made for the test and
    dropped after it."""

    def __init__(self) -> None:
        self.schema = new_schema()
        self._stores: list[PostgresStore] = []

    def _store(self) -> PostgresStore:
        store = PostgresStore(dsn(), schema=self.schema, pool_size=2)
        self._stores.append(store)
        return store

    async def setup(self) -> None:
        await self._store().migrate()

    def make_storage(self, tmp_path: Path, name: str) -> LogStorage:
        return self._store().log(name)

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()
        await anyio.to_thread.run_sync(drop_schema, self.schema)


class ExampleBackend:
    """``examples/custom_storage.py``, the backend docs/storage.md walks through:
    the suite keeps the example honest."""

    def __init__(self) -> None:
        path = Path(__file__).parent.parent / "examples" / "custom_storage.py"
        spec = importlib.util.spec_from_file_location("custom_storage_example", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._store = module.DictStore()

    def make_storage(self, tmp_path: Path, name: str) -> LogStorage:
        return cast("LogStorage", self._store.log(name))


BACKENDS: dict[str, Callable[[], Backend]] = {
    "memory": MemoryBackend,
    "file": FileBackend,
    "sqlite": SQLiteBackend,
    "postgres": PostgresBackend,
    "example": ExampleBackend,
}
# Backends that need a server skip, saying how to get one, when none answers.
MARKS = {"postgres": requires_postgres}


@pytest.fixture(params=[pytest.param(b, marks=MARKS.get(b, ())) for b in BACKENDS])
async def open_log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[str], LogStorage]]:
    """``open_log(name)``: a handle on log ``name`` (same name, same log).

    A backend may also have ``async setup()`` (run first) and ``async aclose()``
    (run after the test, to close what its handles opened).
    """
    backend = BACKENDS[request.param]()
    setup = getattr(backend, "setup", None)
    if setup is not None:
        await setup()
    try:
        yield lambda name: backend.make_storage(tmp_path, name)
    finally:
        aclose = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()


def entry(i: int, **extra: object) -> bytes:
    return orjson.dumps({"type": "done", "id": i, "t": 1.5, "result": i, **extra})


async def read_all(storage: LogStorage) -> list[tuple[int, bytes]]:
    return [item async for item in storage.read()]


async def read_entries(storage: LogStorage) -> list[bytes]:
    return [data for _, data in await read_all(storage)]


def locked_message(storage: LogStorage) -> str:
    return re.escape(f"log {storage.label} is already open for writing by another job")


# -- reading and appending -------------------------------------------------------------


async def test_a_new_log_reads_empty(open_log: Callable[[str], LogStorage]) -> None:
    storage = open_log("fresh")
    assert await read_all(storage) == []
    await storage.acquire()
    try:
        assert await read_all(storage) == []
    finally:
        await storage.release()


async def test_batches_read_back_in_order_with_increasing_positions(
    open_log: Callable[[str], LogStorage],
) -> None:
    storage = open_log("ordered")
    await storage.acquire()
    try:
        await storage.append([entry(0), entry(1)])
        await storage.append([entry(2)])
        await storage.append([entry(3), entry(4), entry(5)])
        records = await read_all(storage)
    finally:
        await storage.release()
    assert [data for _, data in records] == [entry(i) for i in range(6)]
    positions = [pos for pos, _ in records]
    assert positions == sorted(set(positions))
    assert positions[0] >= 0


async def test_an_empty_batch_appends_nothing(
    open_log: Callable[[str], LogStorage],
) -> None:
    storage = open_log("empty-batch")
    await storage.acquire()
    try:
        await storage.append([entry(0)])
        await storage.append([])
        await storage.append([entry(1)])
        assert await read_entries(storage) == [entry(0), entry(1)]
    finally:
        await storage.release()


async def test_read_without_acquire_sees_committed_entries(
    open_log: Callable[[str], LogStorage],
) -> None:
    writer = open_log("shared")
    await writer.acquire()
    try:
        await writer.append([entry(0), entry(1)])
        # A second handle reads while the writer still holds the log.
        reader = open_log("shared")
        assert await read_entries(reader) == [entry(0), entry(1)]
    finally:
        await writer.release()
    assert await read_entries(open_log("shared")) == [entry(0), entry(1)]


async def test_entries_appended_after_a_reopen_follow_the_old_ones(
    open_log: Callable[[str], LogStorage],
) -> None:
    first = open_log("reopened")
    await first.acquire()
    await first.append([entry(0), entry(1)])
    await first.release()
    before = await read_all(first)

    again = open_log("reopened")
    await again.acquire()
    try:
        await again.append([entry(2)])
        records = await read_all(again)
    finally:
        await again.release()
    assert records[:2] == before
    assert [data for _, data in records] == [entry(0), entry(1), entry(2)]
    assert records[2][0] > records[1][0]


async def test_logs_with_other_names_are_separate(
    open_log: Callable[[str], LogStorage],
) -> None:
    a, b = open_log("a"), open_log("b")
    await a.acquire()
    await b.acquire()  # another log: no conflict
    try:
        await a.append([entry(1)])
        await b.append([entry(2)])
        assert await read_entries(a) == [entry(1)]
        assert await read_entries(b) == [entry(2)]
    finally:
        await a.release()
        await b.release()


async def test_a_large_batch_round_trips(open_log: Callable[[str], LogStorage]) -> None:
    storage = open_log("large")
    batch = [entry(i, pad="x" * (i % 300)) for i in range(10_000)]
    await storage.acquire()
    try:
        await storage.append(batch)
        await storage.append([entry(10_000)])
    finally:
        await storage.release()
    records = await read_all(open_log("large"))
    assert [data for _, data in records] == [*batch, entry(10_000)]
    positions = [pos for pos, _ in records]
    assert all(a < b for a, b in itertools.pairwise(positions))


async def test_unicode_survives(open_log: Callable[[str], LogStorage]) -> None:
    texts = [
        "héllo wörld",
        "日本語のテキスト",
        "emoji 😀🎉 and a combining é",
        "line\nbreak\r\nand tab\t and \u2028 separator",
        "nul \x00 byte and \u00ff",
    ]
    batch = [entry(i, text=t) for i, t in enumerate(texts)]
    storage = open_log("unicode")
    await storage.acquire()
    try:
        await storage.append(batch)
    finally:
        await storage.release()
    got = await read_entries(open_log("unicode"))
    assert got == batch
    assert [orjson.loads(data)["text"] for data in got] == texts


# -- one writer ----------------------------------------------------------------------------


async def test_acquire_twice_is_refused(open_log: Callable[[str], LogStorage]) -> None:
    storage = open_log("locked")
    await storage.acquire()
    try:
        with pytest.raises(LogLockedError, match=locked_message(storage)) as info:
            await storage.acquire()
        assert info.value.job == storage.label
        assert str(info.value).endswith(
            "; a log has one writer at a time: close the other job or wait for it "
            "to finish"
        )
        second = open_log("locked")
        with pytest.raises(LogLockedError, match=locked_message(second)):
            await second.acquire()
        # The refused attempts did not take the log from its writer.
        await storage.append([entry(0)])
    finally:
        await storage.release()
    assert await read_entries(open_log("locked")) == [entry(0)]


async def test_release_lets_the_next_writer_in(
    open_log: Callable[[str], LogStorage],
) -> None:
    first = open_log("handover")
    await first.acquire()
    await first.append([entry(0)])
    await first.release()
    await first.release()  # releasing twice is harmless

    second = open_log("handover")
    await second.acquire()
    try:
        await second.append([entry(1)])
    finally:
        await second.release()

    await first.acquire()  # and the first handle may come back
    try:
        await first.append([entry(2)])
        assert await read_entries(first) == [entry(0), entry(1), entry(2)]
    finally:
        await first.release()


async def test_release_without_acquire_is_harmless(
    open_log: Callable[[str], LogStorage],
) -> None:
    storage = open_log("never-held")
    await storage.release()
    await storage.acquire()
    await storage.release()


async def test_append_without_the_lease_is_refused(
    open_log: Callable[[str], LogStorage],
) -> None:
    storage = open_log("no-lease")
    message = re.escape(
        f"log {storage.label}: append failed: not open for writing (acquire() first)"
    )
    with pytest.raises(StorageError, match=f"^{message}$") as caught:
        await storage.append([entry(0)])
    assert type(caught.value) is StorageError  # a refusal, not an outage
    assert (caught.value.store, caught.value.operation) == (storage.label, "append")
    await storage.acquire()
    await storage.append([entry(1)])
    await storage.release()
    with pytest.raises(StorageError, match=f"^{message}$"):
        await storage.append([entry(2)])
    assert await read_entries(storage) == [entry(1)]


async def test_every_backend_is_a_log_storage(
    open_log: Callable[[str], LogStorage],
) -> None:
    storage = open_log("typed")
    assert isinstance(storage, LogStorage)
    assert isinstance(storage.label, str)
    assert storage.label


# -- append_nowait: optional; a backend that offers it commits like append --------
# (the job driver uses it only through nowait_appender, see tests/test_at_once.py)

NOWAIT = ("memory", "file")
"""The backends offering ``append_nowait``; the others must not grow one unnoticed."""


def nowait(storage: LogStorage, backend: str) -> Callable[[list[bytes]], bool]:
    method = getattr(storage, "append_nowait", None)
    assert (method is not None) == (backend in NOWAIT), backend
    return cast("Callable[[list[bytes]], bool]", method)


@pytest.fixture(params=NOWAIT)
def nowait_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_only_the_listed_backends_offer_append_nowait(
    open_log: Callable[[str], LogStorage], request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["open_log"]
    nowait(open_log("offered"), backend)


async def test_append_nowait_commits_like_append(
    nowait_backend: str, tmp_path: Path
) -> None:
    make = BACKENDS[nowait_backend]()
    storage = make.make_storage(tmp_path, "nowait")
    append_nowait = nowait(storage, nowait_backend)
    await storage.acquire()
    try:
        await storage.append([entry(0)])
        assert append_nowait([entry(1), entry(2)]) is True
        assert append_nowait([]) is True  # an empty batch: nothing
        await storage.append([entry(3)])
    finally:
        await storage.release()
    reopened = make.make_storage(tmp_path, "nowait")
    assert await read_entries(reopened) == [entry(i) for i in range(4)]


async def test_append_nowait_without_the_lease_is_refused(
    nowait_backend: str, tmp_path: Path
) -> None:
    storage = BACKENDS[nowait_backend]().make_storage(tmp_path, "nowait-no-lease")
    append_nowait = nowait(storage, nowait_backend)
    message = re.escape(
        f"log {storage.label}: append failed: not open for writing (acquire() first)"
    )
    with pytest.raises(StorageError, match=f"^{message}$"):
        append_nowait([entry(0)])
    assert await read_entries(storage) == []
