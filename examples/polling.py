"""An endless polling loop whose log stays small: continue as new.

The job watches a feed forever: fetch what is new, handle each item, sleep, poll
again. Written as one loop it would grow its log without end, and every resume
would replay all of it. Every POLLS_PER_RUN polls it calls
``ctx.continue_as_new(cursor, handled)`` instead: the run ends and the same job
goes on, from the function's start, with the cursor it reached, in a fresh log
(``feed.jsonl``, then ``feed.1.jsonl``, ``feed.2.jsonl``...). A resume replays only
the current run's log, however long the job has lived.
"""

import asyncio
from pathlib import Path

import duron
from duron.contrib.storage import FileLogStorage

POLLS_PER_RUN = 20
LOG = Path("feed.jsonl")


@duron.effect
async def fetch_new(cursor: int) -> list[int]:
    """The feed's items after ``cursor`` (here: two new ones at each poll)."""
    return [cursor + 1, cursor + 2]


@duron.effect
async def handle(item: int) -> None:
    """Do something with one item (send it on, store it...)."""


@duron.durable
async def watch_feed(ctx: duron.Context, cursor: int = 0, handled: int = 0) -> None:
    for _ in range(POLLS_PER_RUN):
        items = await ctx.run(fetch_new, cursor)
        for item in items:
            await ctx.run(handle, item)
        if items:
            cursor = items[-1]
            handled += len(items)
        await asyncio.sleep(0.005)  # a durable timer: not waited again on replay
    # A fresh log for the next polls: the job never ends, its log never grows.
    ctx.continue_as_new(cursor, handled)


def runs() -> list[Path]:
    return sorted(
        LOG.parent.glob(f"{LOG.stem}*{LOG.suffix}"), key=lambda p: (len(p.name), p.name)
    )


async def main() -> None:
    async with watch_feed.invoke(FileLogStorage(LOG)) as job:
        await job.start()
        while len(runs()) < 6:  # let it live a while, then stop it
            await asyncio.sleep(0.05)
    sizes = [len(p.read_bytes().splitlines()) for p in runs()]
    print(f"{len(sizes)} runs so far: {', '.join(p.name for p in runs()[:3])}...")
    print(
        "every log stayed under 100 entries"
        if max(sizes) < 100
        else f"a log grew to {max(sizes)} entries"
    )

    # Resumed later, it replays its current run only, then polls on.
    async with watch_feed.invoke(FileLogStorage(LOG)) as job:
        await job.resume()
        before = len(runs())
        while len(runs()) == before:
            await asyncio.sleep(0.05)
    print("resumed from its current run and went on polling")


asyncio.run(main())
