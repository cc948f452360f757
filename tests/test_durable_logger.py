"""``ctx.logger``: records from durable code are dropped while the job replays what
its log recorded, and carry the job's id, function and position."""

from __future__ import annotations

import logging

import anyio
import pytest

import duron
import duron.testing
from duron.contrib.storage import MemoryLogStorage

pytestmark = pytest.mark.anyio

gate: dict[str, anyio.Event] = {}


@duron.effect
async def fetch(key: int) -> int:
    return key * 10


@duron.effect
async def wait_for_gate() -> str:
    await gate["open"].wait()
    return "opened"


@duron.durable
async def chatty(ctx: duron.Context, key: int) -> str:
    ctx.logger.info("starting %s", key)
    value = await ctx.run(fetch, key)
    ctx.logger_for("shop.orders").warning("fetched %s", value)
    opened = await ctx.run(wait_for_gate)
    ctx.logger.info("gate %s", opened, extra={"order": key})
    return opened


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str, int]]:
    return [
        (r.name, r.getMessage(), r.duron_job, r.duron_position)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name in ("duron.job", "shop.orders")
    ]


async def test_each_line_is_logged_once_across_a_stop_and_a_resume(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    storage = MemoryLogStorage(label="order-7")
    gate["open"] = anyio.Event()
    async with chatty.invoke(storage) as job:
        await job.start(7)
        with anyio.fail_after(5):
            while len(storage.raw) < 3:  # fetch's end, then the gate's start entry
                await anyio.sleep(0.005)
    assert lines(caplog) == [
        ("duron.job", "starting 7", "order-7", 0),
        ("shop.orders", "fetched 70", "order-7", 1),
    ]
    caplog.clear()
    gate["open"].set()
    async with chatty.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == "opened"
    # Replayed lines are silent; the line after the log's end is new.
    assert lines(caplog) == [("duron.job", "gate opened", "order-7", 2)]
    (record,) = [r for r in caplog.records if r.name == "duron.job"]
    assert record.duron_function == "chatty"  # type: ignore[attr-defined]
    assert record.order == 7  # type: ignore[attr-defined]
    assert record.funcName == "chatty"  # the durable code's line, not the adapter's

    caplog.clear()
    async with chatty.invoke(storage) as job:  # the whole log again
        await job.resume()
        assert await job.wait() == "opened"
    await duron.testing.verify_async(chatty, storage)
    assert lines(caplog) == []


async def test_a_level_the_logger_does_not_take_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    gate["open"] = anyio.Event()
    gate["open"].set()
    async with chatty.invoke(MemoryLogStorage(label="j")) as job:
        await job.start(1)
        await job.wait()
    assert lines(caplog) == [("shop.orders", "fetched 10", "j", 1)]


async def test_the_logger_names_its_logger_and_job() -> None:
    @duron.durable
    async def show(ctx: duron.Context) -> str:
        return repr(ctx.logger)

    async with show.invoke(MemoryLogStorage(label="job-1")) as job:
        await job.start()
        assert await job.wait() == "<DurableLogger duron.job job=job-1>"
