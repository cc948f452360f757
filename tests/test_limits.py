"""The size limit per log entry and the warning on a job's log size, on every storage.

Each limit test builds the entry it expects by hand (``orjson.dumps`` of the
fields the log format holds) to know its size, and asserts the whole message.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import duron
from duron import LogLimits, PayloadTooLargeError
from duron.contrib.storage import (
    FileLogStorage,
    MemoryLogStorage,
    PostgresStore,
    SQLiteStore,
)

sys.path.insert(0, str(Path(__file__).parent))
from postgres_support import drop_schema, dsn, new_schema, requires_postgres

pytestmark = pytest.mark.anyio

T = 1_700_000_000.5  # the job clock every test runs on: entries of known size
LIMIT = 2000
ADVICE = (
    "keep large data outside the log and record a reference to it, or raise the "
    "storage's limits.max_entry_size"
)


def too_large(what: str, size: int, limit: int = LIMIT) -> str:
    return (
        f"{what}: {size:,} bytes encoded, over the limit of {limit:,} bytes per log "
        f"entry; {ADVICE}"
    )


def size(**entry: Any) -> int:
    return len(orjson.dumps(entry))


# -- storages ------------------------------------------------------------------------


class Storages:
    """Makes logs (and, for the SQL stores, the store) with given limits."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.schema = new_schema() if kind == "postgres" else ""
        self.stores: list[SQLiteStore | PostgresStore] = []

    async def store(self, limits: LogLimits) -> SQLiteStore | PostgresStore:
        store: SQLiteStore | PostgresStore
        if self.kind == "sqlite":
            store = SQLiteStore(self.tmp_path / "jobs.db", limits=limits)
        else:
            store = PostgresStore(dsn(), schema=self.schema, pool_size=2, limits=limits)
            if not self.stores:
                await store.migrate()
        self.stores.append(store)
        return store

    async def log(self, name: str, limits: LogLimits) -> duron.LogStorage:
        if self.kind == "memory":
            return MemoryLogStorage(label=name, limits=limits)
        if self.kind == "file":
            return FileLogStorage(self.tmp_path / f"{name}.jsonl", limits=limits)
        return (await self.store(limits)).log(name)

    def label(self, name: str) -> str:
        return str(self.tmp_path / f"{name}.jsonl") if self.kind == "file" else name

    async def aclose(self) -> None:
        for store in self.stores:
            await store.close()
        if self.schema:
            await anyio.to_thread.run_sync(drop_schema, self.schema)


@pytest.fixture(
    params=[
        "memory",
        "file",
        "sqlite",
        pytest.param("postgres", marks=requires_postgres),
    ]
)
async def storages(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Storages]:
    s = Storages(request.param, tmp_path)
    try:
        yield s
    finally:
        await s.aclose()


async def read(storage: duron.LogStorage) -> list[dict[str, Any]]:
    return [orjson.loads(raw) async for _, raw in storage.read()]


# -- an effect's result --------------------------------------------------------------

runs: list[int] = []


@duron.effect
async def make(n: int) -> str:
    runs.append(n)
    return "x" * n


@duron.durable
async def produce(ctx: duron.Context, n: int) -> int:
    return len(await ctx.run(make, n))


def done_size(n: int) -> int:
    return size(
        type="done",
        id=0,
        t=T,
        result="x" * n,
        kind="effect",
        name="make",
        inputs={"n": n},
    )


async def test_a_result_over_the_limit_fails_the_job_and_nothing_is_written(
    storages: Storages,
) -> None:
    storage = await storages.log("big", LogLimits(max_entry_size=LIMIT))
    async with produce.invoke(storage, clock=lambda: T) as job:
        await job.start(LIMIT)
        with pytest.raises(PayloadTooLargeError) as info:
            await job.wait()
    label = storages.label("big")
    assert str(info.value) == too_large(
        f"job {label}: position 0: result of effect make (done entry)",
        done_size(LIMIT),
    )
    assert (info.value.size, info.value.limit) == (done_size(LIMIT), LIMIT)
    assert [e["type"] for e in await read(storage)] == ["job"]


async def test_an_entry_of_exactly_the_limit_is_written(storages: Storages) -> None:
    n = 1000
    storage = await storages.log("edge", LogLimits(max_entry_size=done_size(n)))
    async with produce.invoke(storage, clock=lambda: T) as job:
        await job.start(n)
        assert await job.wait() == n
    raws = [raw async for _, raw in storage.read()]
    assert len(raws[1]) == done_size(n)


async def test_the_default_limit_is_4_mib() -> None:
    n = 4 * 1024 * 1024
    storage = MemoryLogStorage(label="default")
    assert storage.limits == LogLimits(max_entry_size=4_194_304, warn_log_size=None)
    async with produce.invoke(storage, clock=lambda: T) as job:
        await job.start(n)
        with pytest.raises(PayloadTooLargeError) as info:
            await job.wait()
    assert str(info.value) == too_large(
        "job default: position 0: result of effect make (done entry)",
        done_size(n),
        4_194_304,
    )


async def test_a_worker_records_the_job_failed_and_never_runs_it_again(
    tmp_path: Path,
) -> None:
    runs.clear()
    async with SQLiteStore(
        tmp_path / "jobs.db", limits=LogLimits(max_entry_size=LIMIT)
    ) as store:
        job_id = await store.submit(produce.options(job_id="big"), LIMIT)
        async with duron.Worker(store, [produce]) as worker:
            await worker.wait_idle()
        info = await store.get(job_id)
        assert info.status == "failed"
        assert info.error is not None
        assert info.error.type.endswith("PayloadTooLargeError")
        assert info.error.message.startswith(
            "job big: position 0: result of effect make (done entry): "
        )
        async with duron.Worker(store, [produce]) as worker:
            await worker.wait_idle()
    assert runs == [LIMIT]  # ran once: a failure that cannot pass is not retried


# -- what else durable code produces ---------------------------------------------------


@duron.effect
async def echo(text: str) -> int:
    return len(text)


@duron.durable
async def pass_big(ctx: duron.Context, n: int) -> int:
    return await ctx.run(echo, "y" * n)


@duron.durable
async def return_big(ctx: duron.Context, n: int) -> str:
    return "z" * n


async def test_inputs_over_the_limit_name_the_effect(storages: Storages) -> None:
    storage = await storages.log("inputs", LogLimits(max_entry_size=LIMIT))
    async with pass_big.invoke(storage, clock=lambda: T) as job:
        await job.start(LIMIT)
        with pytest.raises(PayloadTooLargeError) as info:
            await job.wait()
    want = size(
        type="done",
        id=0,
        t=T,
        result=LIMIT,
        kind="effect",
        name="echo",
        inputs={"text": "y" * LIMIT},
    )
    assert str(info.value) == too_large(
        f"job {storages.label('inputs')}: position 0: result of effect echo "
        "(done entry)",
        want,
    )


async def test_a_job_result_over_the_limit_names_the_function(
    storages: Storages,
) -> None:
    storage = await storages.log("result", LogLimits(max_entry_size=LIMIT))
    async with return_big.invoke(storage, clock=lambda: T) as job:
        await job.start(LIMIT)
        with pytest.raises(PayloadTooLargeError) as info:
            await job.wait()
    assert str(info.value) == too_large(
        f"job {storages.label('result')}: result of durable function return_big "
        "(end entry)",
        size(type="end", t=T, result="z" * LIMIT),
    )
    assert [e["type"] for e in await read(storage)] == ["job"]


# -- a job's arguments ------------------------------------------------------------------


@duron.durable
async def takes(ctx: duron.Context, text: str) -> int:
    return len(text)


def job_entry_size(text: str, seed: str) -> int:
    return size(
        type="job",
        version=1,
        fn="takes",
        module="test_limits",
        args={"text": text},
        seed=seed,
        t=T,
    )


async def test_arguments_over_the_limit_are_refused_by_start(
    storages: Storages,
) -> None:
    storage = await storages.log("args", LogLimits(max_entry_size=LIMIT))
    async with takes.invoke(storage, clock=lambda: T) as job:
        with pytest.raises(PayloadTooLargeError) as info:
            await job.start("a" * LIMIT)
    # The seed is random but always 16 hex digits.
    want = job_entry_size("a" * LIMIT, "0" * 16)
    assert str(info.value) == too_large(
        f"job {storages.label('args')}: arguments of takes (job entry)", want
    )
    assert await read(storage) == []


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=requires_postgres)]
)
async def test_arguments_over_the_limit_are_refused_by_submit(
    kind: str, tmp_path: Path
) -> None:
    s = Storages(kind, tmp_path)
    try:
        store = await s.store(LogLimits(max_entry_size=LIMIT))
        with pytest.raises(PayloadTooLargeError) as info:
            await store.submit(takes.options(job_id="args"), "a" * LIMIT)
        size_now = info.value.size
        assert str(info.value) == too_large(
            "job args: arguments of takes (job entry)", size_now
        )
        assert size_now > LIMIT
        assert await store.list_jobs() == []
        # Under the limit, the same call is taken.
        assert await store.submit(takes.options(job_id="ok"), "a" * 100) == "ok"
    finally:
        await s.aclose()


# -- values sent in ---------------------------------------------------------------------


@duron.durable
async def collect(
    ctx: duron.Context,
    inbox: duron.Stream[str] = duron.Provided,
    outbox: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    future_id, answer = await ctx.create_future(str, name="answer")
    await outbox.send(future_id)
    got = [await answer]
    async for item in inbox:
        got.append(item)
    return got


async def test_values_sent_in_over_the_limit_are_refused_to_the_sender(
    storages: Storages,
) -> None:
    storage = await storages.log("sent", LogLimits(max_entry_size=LIMIT))
    label = storages.label("sent")
    async with collect.invoke(storage, clock=lambda: T) as job:
        await job.start()
        outbox = await job.open_stream("outbox", "r")
        future_id = await anext(aiter(outbox))
        with pytest.raises(PayloadTooLargeError) as info:
            await job.complete_future(future_id, result="f" * LIMIT)
        # Measured with the longest time an entry can hold: at most 16 bytes more.
        measured = size(
            type="done",
            id=1,  # position 0 is the inbox parameter
            t=0.0,
            result="f" * LIMIT,
            kind="future",
            name="answer",
        )
        assert str(info.value) == too_large(
            f"job {label}: result for future '1' (answer) (log entry)", measured + 16
        )
        assert job.is_future_pending(future_id)
        await job.complete_future(future_id, result="small")

        inbox = await job.open_stream("inbox", "w")
        with pytest.raises(PayloadTooLargeError) as info:
            await inbox.send("s" * LIMIT)
        measured = size(type="emit", id=0, t=0.0, value="s" * LIMIT)
        assert str(info.value) == too_large(
            f"job {label}: value for 'inbox' (log entry)", measured + 16
        )
        await inbox.send("fits")
        await inbox.close()
        assert await job.wait() == ["small", "fits"]


# -- the limits themselves ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_entry_size": 0},
            "max_entry_size must be a positive number of bytes, not 0",
        ),
        (
            {"max_entry_size": 1.5},
            "max_entry_size must be a positive number of bytes, not 1.5",
        ),
        (
            {"warn_log_size": -1},
            "warn_log_size must be a positive number of bytes, not -1",
        ),
    ],
)
def test_limits_must_be_positive_byte_counts(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        LogLimits(**kwargs)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: MemoryLogStorage(limits=1000),  # type: ignore[arg-type]
        lambda tmp: FileLogStorage(tmp / "x.jsonl", limits=1000),  # type: ignore[arg-type]
        lambda tmp: SQLiteStore(tmp / "x.db", limits=1000),  # type: ignore[arg-type]
    ],
    ids=["memory", "file", "sqlite"],
)
def test_a_storage_takes_only_log_limits(
    make: Callable[[Path], object], tmp_path: Path
) -> None:
    with pytest.raises(TypeError) as info:
        make(tmp_path)
    assert str(info.value) == "limits must be a duron.LogLimits, not int"


# -- the warning on a job's log size ---------------------------------------------------


@duron.effect
async def step(i: int) -> int:
    return i


@duron.durable
async def steps(ctx: duron.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(step, i)
    return total


async def test_a_log_past_the_warning_size_is_logged_once_per_run(
    storages: Storages, caplog: pytest.LogCaptureFixture
) -> None:
    limits = LogLimits(warn_log_size=1000)
    storage = await storages.log("grows", limits)
    label = storages.label("grows")
    want = (
        f"duron: job {label}: its log has grown past 1,000 bytes (warn_log_size); "
        "every resume replays all of it"
    )
    with caplog.at_level(logging.WARNING, logger="duron"):
        async with steps.invoke(storage, clock=lambda: T) as job:
            await job.start(40)
            assert await job.wait() == sum(range(40))
    assert [r.getMessage() for r in caplog.records] == [want]
    caplog.clear()
    # A resume counts what it replays: the warning comes once more, in this run.
    if storages.kind == "memory":
        storage = MemoryLogStorage(
            [raw async for _, raw in storage.read()], label="grows", limits=limits
        )
    else:
        storage = await storages.log("grows", limits)
    with caplog.at_level(logging.WARNING, logger="duron"):
        async with steps.invoke(storage) as job:
            await job.resume()
            await job.wait()
    assert [r.getMessage() for r in caplog.records] == [want]


async def test_no_warning_under_the_size(
    storages: Storages, caplog: pytest.LogCaptureFixture
) -> None:
    storage = await storages.log("small", LogLimits(warn_log_size=100_000))
    with caplog.at_level(logging.WARNING, logger="duron"):
        async with steps.invoke(storage, clock=lambda: T) as job:
            await job.start(40)
            await job.wait()
    assert caplog.records == []


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=requires_postgres)]
)
async def test_a_store_sums_its_jobs_log_sizes(kind: str, tmp_path: Path) -> None:
    s = Storages(kind, tmp_path)
    try:
        store = await s.store(LogLimits())
        for job_id, n in (("three", 3), ("ten", 10)):
            async with steps.invoke(store.log(job_id)) as job:
                await job.start(n)
                await job.wait()
        await store.submit(steps.options(job_id="queued"), 1)
        sizes = await store.log_sizes(["three", "ten", "queued", "unknown", "ten"])
        want = {}
        for job_id in ("three", "ten", "queued"):
            raws = [raw async for _, raw in store.log(job_id).read()]
            want[job_id] = duron.LogSize(len(raws), sum(map(len, raws)))
        assert sizes == want
        assert sizes["ten"].entries == 12  # job, ten effects, end
        assert await store.log_sizes([]) == {}
    finally:
        await s.aclose()


# -- the example of docs/concepts.md ---------------------------------------------------

CONCEPTS = Path(__file__).parent.parent / "docs" / "concepts.md"
PROGRAM = re.compile(
    r"```python\n((?:(?!```).)*?)```\n\nOutput:\n\n```text\n(.*?)```", re.DOTALL
)


def test_the_long_lived_jobs_example_prints_what_the_page_says(tmp_path: Path) -> None:
    # The page shows other programs too (retries); this one sets warn_log_size.
    [(code, output)] = [
        found
        for found in PROGRAM.findall(CONCEPTS.read_text(encoding="utf-8"))
        if "warn_log_size" in found[0]
    ]
    script = tmp_path / "program.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == output
    assert proc.stderr == (
        "duron: job poll: its log has grown past 2,000 bytes (warn_log_size); every "
        "resume replays all of it\n"
    )
