"""Concurrency inside durable code replays the way it ran.

Run it: ``python examples/concurrency.py``. The durable function races effects of
random latency against timeouts and timers, with asyncio and anyio primitives. The
replay takes the same branches, sees the same clock and the same random numbers,
runs no effect, and finishes at once although the first run slept.
"""

import asyncio
import random
import sys
import time

import anyio

import duron
from duron.contrib.storage import MemoryLogStorage

calls = 0


@duron.effect
async def probe(name: str) -> str:
    global calls
    calls += 1
    await asyncio.sleep(random.uniform(0.0, 0.2))  # the host's timing varies
    return f"{name} ok"


@duron.durable
async def survey(ctx: duron.Context, hosts: list[str]) -> list[str]:
    started = await ctx.time()  # the job's clock: recorded, replayed
    report = []

    # gather: results in call order, whatever order they finished in.
    report += await asyncio.gather(*(ctx.run(probe, h) for h in hosts))

    # create_task, and a timeout racing an effect: on replay the timeout fires
    # (or not) exactly where it did the first time.
    task = asyncio.create_task(ctx.run(probe, "slow-host"))
    try:
        report.append(await asyncio.wait_for(asyncio.shield(task), timeout=0.1))
    except asyncio.TimeoutError:
        report.append("slow-host timed out; waiting on")
        report.append(await task)

    # TaskGroup (Python 3.11+) and anyio task groups run on the same loop.
    if sys.version_info >= (3, 11):
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(ctx.run(probe, "tg-1"))
            second = tg.create_task(ctx.run(probe, "tg-2"))
        report += [first.result(), second.result()]

    async def probe_into(name: str) -> None:
        report.append(await ctx.run(probe, name))

    async with anyio.create_task_group() as atg:
        atg.start_soon(probe_into, "anyio-1")
        atg.start_soon(probe_into, "anyio-2")

    # A durable timer: live it waits, on replay it takes no time.
    await asyncio.sleep(0.5)

    pick = ctx.random().choice(hosts)  # seeded per job and call: same on replay
    elapsed = await ctx.time() - started
    report.append(f"picked {pick} after {elapsed:.2f} s of job time")
    return report


async def main() -> None:
    storage = MemoryLogStorage()
    results = []
    for run in ("first run", "replay"):
        before, t0 = calls, time.monotonic()
        async with survey.invoke(storage) as job:
            await job.start(["a", "b", "c"])
            results.append(await job.wait())
        took = time.monotonic() - t0
        print(f"{run}: {calls - before} effects ran, {took:.1f} s")
    print("\n".join(results[0]))
    assert results[0] == results[1]
    print("replay returned the same report")


if __name__ == "__main__":
    asyncio.run(main())
