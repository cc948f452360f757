"""A codec of your own: ``@duron.durable(codec=...)``.

Run it: ``python examples/custom_codec.py``. ``Money`` is a plain class pydantic
knows nothing about. The codec encodes it itself and hands every other annotation
to the default ``duron.PydanticCodec``. The codec serves the whole job: its
arguments and result, and every effect's inputs and result.
"""

import asyncio
from decimal import Decimal
from typing import Any

import duron
from duron.contrib.storage import MemoryLogStorage


# --8<-- [start:codec]
class Money:
    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __repr__(self) -> str:
        return f"Money({self.amount} {self.currency})"


class MoneyCodec:
    """Money as ``"12.50 EUR"`` in the log; anything else through pydantic."""

    def __init__(self) -> None:
        self.fallback = duron.PydanticCodec()

    def encode(self, value: object, annotation: Any, /) -> duron.JSONValue:
        if annotation is Money:
            if not isinstance(value, Money):
                raise TypeError(f"expected Money, got {type(value).__qualname__}")
            return f"{value.amount} {value.currency}"
        return self.fallback.encode(value, annotation)

    def decode(self, data: duron.JSONValue, annotation: Any, /) -> object:
        if annotation is Money:
            assert isinstance(data, str)
            amount, currency = data.split(" ")
            return Money(Decimal(amount), currency)
        return self.fallback.decode(data, annotation)


@duron.effect
async def quote(item: str) -> Money:
    print(f"  effect: quote({item!r})")
    return Money(Decimal("12.50"), "EUR")


@duron.durable(codec=MoneyCodec())
async def buy(ctx: duron.Context, item: str, budget: Money) -> str:
    price = await ctx.run(quote, item)
    verdict = "buy" if price.amount <= budget.amount else "skip"
    return f"{verdict} {item} at {price!r}"


# --8<-- [end:codec]


async def main() -> None:
    storage = MemoryLogStorage()
    for run in ("first run", "replay"):
        print(f"{run}:")
        async with buy.invoke(storage) as job:
            await job.start("lamp", Money(Decimal(20), "EUR"))
            print(" ", await job.wait())
    print("the log:")
    for raw in storage.raw:
        print(" ", raw.decode())


if __name__ == "__main__":
    asyncio.run(main())
