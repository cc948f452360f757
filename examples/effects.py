"""The kinds of effect, and what replay does with each.

Run it: ``python examples/effects.py``. The job runs twice over the same log: the
first run prints a line from every effect, the replay prints none and returns the
same result, including the exception the durable code caught.
"""

import asyncio
import threading
import time

import duron
from duron.contrib.storage import MemoryLogStorage


@duron.effect
async def fetch_price(sku: str) -> int:
    # An async effect runs on the job's event loop.
    print(f"  effect: fetch_price({sku!r})")
    await asyncio.sleep(0.1)
    return {"apple": 3, "pear": 4}[sku]


@duron.effect
def checksum(text: str) -> int:
    # A plain def effect runs in a worker thread: blocking here does not block
    # the job's other effects.
    print(f"  effect: checksum in thread {threading.current_thread().name!r}")
    time.sleep(0.1)
    return sum(text.encode()) % 251


class OutOfStock(Exception):
    pass


@duron.effect
async def reserve(sku: str, count: int) -> None:
    print(f"  effect: reserve({sku!r}, {count})")
    raise OutOfStock(f"only 2 {sku}s left")


async def lookup_discount(code: str) -> float:
    # Not decorated: ctx.run accepts any callable; its result must then be
    # JSON-native (str, int, float, bool, None, lists and dicts of those).
    print(f"  effect: lookup_discount({code!r})")
    return 0.1


@duron.durable
async def order(ctx: duron.Context, sku: str, count: int) -> str:
    price, check = await asyncio.gather(
        ctx.run(fetch_price, sku), ctx.run(checksum, sku)
    )
    discount = await ctx.run(lambda: lookup_discount("SPRING"))
    try:
        await ctx.run(reserve, sku, count)
    except OutOfStock as exc:  # recorded, and raised again as its own type on replay
        return f"not reserved ({exc}); price {price * count * (1 - discount):.2f}, check {check}"
    return "reserved"


async def main() -> None:
    storage = MemoryLogStorage()
    for run in ("first run", "replay"):
        print(f"{run}:")
        async with order.invoke(storage) as job:
            await job.start("apple", 5)
            print(" ", await job.wait())


if __name__ == "__main__":
    asyncio.run(main())
