"""Typed payloads: what an effect returns comes back as its annotated type on replay.

Run it: ``python examples/payloads.py``. The first run calls the effects; the second
replays them from the log (printed in between) and gets equal values of the same
types: a pydantic model, a dataclass, a TypedDict, an enum, datetimes, a UUID and a
Decimal.
"""

import asyncio
import dataclasses
import enum
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pydantic

# pydantic needs typing_extensions.TypedDict (not typing's) before Python 3.12.
from typing_extensions import TypedDict

import duron
from duron.contrib.storage import MemoryLogStorage


class Status(enum.Enum):
    PAID = "paid"
    REFUNDED = "refunded"


class Customer(pydantic.BaseModel):
    id: uuid.UUID
    name: str
    since: datetime


@dataclasses.dataclass
class Line:
    sku: str
    price: Decimal
    count: int = 1


class Totals(TypedDict):
    net: Decimal
    lines: int


@duron.effect
async def load_customer(customer_id: uuid.UUID) -> Customer:
    print("  effect: load_customer")
    return Customer(
        id=customer_id,
        name="Ada",
        since=datetime(2021, 3, 4, 12, 0, tzinfo=timezone.utc),
    )


@duron.effect
async def load_lines(customer: Customer) -> list[Line]:
    print("  effect: load_lines")
    return [Line("apple", Decimal("0.30"), 5), Line("pear", Decimal("0.45"))]


@duron.effect
async def charge(customer: Customer, totals: Totals) -> Status:
    print(f"  effect: charge {totals['net']} to {customer.name}")
    return Status.PAID


@duron.durable
async def checkout(ctx: duron.Context, customer_id: uuid.UUID) -> str:
    customer = await ctx.run(load_customer, customer_id)
    lines = await ctx.run(load_lines, customer)
    totals: Totals = {
        "net": sum((line.price * line.count for line in lines), Decimal(0)),
        "lines": len(lines),
    }
    status = await ctx.run(charge, customer, totals)
    # Every value has its annotated type, on the first run and on replay.
    assert isinstance(customer.since, datetime)
    assert isinstance(lines[0], Line)
    assert isinstance(lines[0].price, Decimal)
    assert status is Status.PAID
    return f"{customer.name}: {totals['lines']} lines, {totals['net']} {status.name}"


async def main() -> None:
    storage = MemoryLogStorage()
    customer_id = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    print("first run:")
    async with checkout.invoke(storage) as job:
        await job.start(customer_id)
        print(" ", await job.wait())
    print("the log:")
    for raw in storage.raw:
        print(" ", raw.decode())
    print("replay:")
    async with checkout.invoke(storage) as job:
        await job.start(customer_id)
        print(" ", await job.wait())


if __name__ == "__main__":
    asyncio.run(main())
