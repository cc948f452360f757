"""A streaming effect: an async generator whose yielded actions fold into a state.

Run it: ``python examples/streaming_effect.py``. ``download`` yields how many bytes
each chunk added; ``duron.Reducer(operator.add)`` on its first parameter folds them
into a running total. Every yielded value is recorded, so the durable code can watch
the partial states with ``ctx.stream`` and a stopped job resumes the generator from
the last recorded state instead of from the beginning.
"""

import asyncio
import operator
from collections.abc import AsyncGenerator
from typing import Annotated

import duron
from duron.contrib.storage import MemoryLogStorage


@duron.effect
async def download(
    received: Annotated[int, duron.Reducer(operator.add)], size: int
) -> AsyncGenerator[int, int]:
    # ``received`` starts at the state ctx.run was given (or the last recorded
    # one after a restart); each ``yield`` hands back the state after folding.
    print(f"  effect: download starts at {received} of {size} bytes")
    while received < size:
        await asyncio.sleep(0.01)
        received = yield min(300, size - received)


@duron.durable
async def fetch(ctx: duron.Context, size: int) -> list[int]:
    seen = []
    async with ctx.stream(download, 0, size) as (states, final):
        async for state in states:
            seen.append(state)
        total = await final
    assert total == size
    # ctx.run gives only the final state.
    assert await ctx.run(download, size - 100, size) == size
    return seen


async def main() -> None:
    storage = MemoryLogStorage()
    for run in ("first run", "replay"):
        print(f"{run}:")
        async with fetch.invoke(storage) as job:
            await job.start(1000)
            print("  progress:", await job.wait())


if __name__ == "__main__":
    asyncio.run(main())
