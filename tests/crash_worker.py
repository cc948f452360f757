"""The job that ``test_crash.py`` runs in a subprocess and SIGKILLs at random moments.

Usage: ``python crash_worker.py DIR BACKEND DURABILITY`` (BACKEND: ``asyncio`` or
``trio``; DURABILITY: the file store's ``flush`` or ``fsync``).

The job runs 200 effects, one at a time or in small gathers, over the file log
``DIR/log.jsonl``; some wait, some run in a thread, some return without waiting
(in flush mode on asyncio those are committed from inside ``ctx.run``). Every effect appends its key to ``DIR/effects.log`` and fsyncs it
before returning, so the test can tell which effects really ran, and how often. When
the job ends the worker prints ``{"result": ...}`` as one JSON line.

This file is not a test module (pytest collects ``test_*.py`` only); it is run by path.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from itertools import cycle
from pathlib import Path

import anyio

import duron
from duron.contrib.storage import Durability, FileLogStorage

N = 200
WIDTHS = (1, 1, 3, 1, 2, 4, 1)
"""How many effects run side by side at each step, in turn."""


class _Side:
    path: Path | None = None


def _record(key: int) -> int:
    assert _Side.path is not None
    with open(_Side.path, "a") as f:
        f.write(f"{key}\n")
        f.flush()
        os.fsync(f.fileno())
    return key * key


@duron.effect
async def square(key: int) -> int:
    await anyio.sleep(0.002 + (key % 4) * 0.001)
    return _record(key)


@duron.effect
def square_in_thread(key: int) -> int:
    time.sleep(0.002 + (key % 4) * 0.001)
    return _record(key)


@duron.effect
async def square_at_once(key: int) -> int:
    return _record(key)


@duron.durable
async def crash_flow(ctx: duron.Context, n: int) -> int:
    async def one(key: int) -> int:
        if key % 5 == 0:
            return await ctx.run(square_in_thread, key)
        if key % 5 == 2:
            return await ctx.run(square_at_once, key)
        return await ctx.run(square, key)

    total = 0
    key = 0
    for width in cycle(WIDTHS):
        if key >= n:
            break
        keys = range(key, min(key + width, n))
        results = await asyncio.gather(*(one(k) for k in keys))
        total += sum(results)
        key += width
        if key % 20 < width:
            await asyncio.sleep(0.001)  # a durable timer now and then
    return total


async def main(directory: Path, durability: str) -> None:
    _Side.path = directory / "effects.log"
    mode: Durability = "fsync" if durability == "fsync" else "flush"
    storage = FileLogStorage(directory / "log.jsonl", durability=mode)
    async with crash_flow.invoke(storage) as job:
        await job.start(N)
        result = await job.wait()
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    durability = sys.argv[3]
    assert durability in ("flush", "fsync"), durability
    anyio.run(main, Path(sys.argv[1]), durability, backend=sys.argv[2])
