"""The jobs the web view's tests show, and the worker process that runs them.

``python tests/ui_jobs.py DB`` runs a worker on the SQLite store ``DB`` until it is
killed (the browser test watches its jobs change).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import anyio

import duron
from duron.contrib.storage import SQLiteStore

FLAKY_FAILURES: dict[str, int] = {}


@duron.effect
async def charge(item: int) -> dict[str, Any]:
    await anyio.sleep(0.002)
    return {"item": item, "ok": True}


@duron.effect(
    retry=duron.RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0.0)
)
async def flaky(key: str) -> str:
    if FLAKY_FAILURES.get(key, 0) < 1:
        FLAKY_FAILURES[key] = FLAKY_FAILURES.get(key, 0) + 1
        raise RuntimeError(f"flaky {key} failed once")
    return "ok"


@duron.durable
async def order(ctx: duron.Context, order_id: str, items: int) -> dict[str, Any]:
    """Charges ``items`` items at once, one flaky call, then waits for approval."""
    charged = await asyncio.gather(*(ctx.run(charge, i) for i in range(items)))
    await ctx.run(flaky, order_id)
    _fid, approval = await ctx.create_future(str, name="approval")
    return {"order": order_id, "approved": await approval, "items": len(charged)}


@duron.durable
async def broken(ctx: duron.Context, why: str) -> None:
    await ctx.run(charge, 0)
    raise ValueError(why)


@duron.durable
async def stepper(ctx: duron.Context, steps: int) -> int:
    """Waits for one future per step and charges what it brings."""
    total = 0
    for i in range(steps):
        _fid, fut = await ctx.create_future(int, name=f"step-{i}")
        got = await ctx.run(charge, await fut)
        total += got["item"]
    return total


@duron.durable
async def part(ctx: duron.Context, n: int) -> int:
    await ctx.run(charge, n)
    return n


@duron.durable
async def family(ctx: duron.Context, parts: int) -> int:
    """Starts one child job per part and adds up their results."""
    children = [await ctx.start_job(part, i) for i in range(parts)]
    return sum(await asyncio.gather(*children))


FUNCTIONS: list[duron.DurableFn[..., Any]] = [order, broken, stepper, part, family]


async def serve(db: str) -> None:
    store = SQLiteStore(db)
    async with duron.Worker(store, FUNCTIONS, poll_interval=0.05, suspend_after=None):
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(serve, sys.argv[1])
