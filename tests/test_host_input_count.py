"""A host that restarts with a job can ask how much of its input the log already has."""

from __future__ import annotations

import pytest

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


@duron.durable
async def collect(
    ctx: duron.Context,
    n: int,
    inbox: duron.Stream[str] = duron.Provided,
    stop: duron.Signal[None] = duron.Provided,
) -> list[str]:
    seen: list[str] = []
    async for message in inbox:
        seen.append(message)
        if len(seen) == n:
            break
    return seen


async def test_recorded_counts_the_values_the_log_holds_across_a_restart() -> None:
    storage = MemoryLogStorage()
    messages = ["a", "b", "c", "d"]
    async with collect.invoke(storage) as job:
        await job.start(4)
        inbox = await job.open_stream("inbox", "w")
        assert await inbox.recorded() == 0
        await inbox.send(messages[0])
        await inbox.send(messages[1])
        assert await inbox.recorded() == 2
        signal = await job.open_stream("stop", "w")
        assert await signal.recorded() == 0
    # The host restarts: it sends only what the log does not hold yet.
    async with collect.invoke(storage) as job:
        await job.resume()
        inbox = await job.open_stream("inbox", "w")
        done = await inbox.recorded()
        assert done == 2
        for message in messages[done:]:
            await inbox.send(message)
        assert await job.wait() == messages
