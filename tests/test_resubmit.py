"""``store.submit()`` under a job id the store holds: the same call (decoded, not
byte for byte) is the same job; another call is refused, naming the first argument
that differs and both of its values. On every SQL store (the ``backend`` fixture)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import pydantic
import pytest

import duron

if TYPE_CHECKING:
    from store_backends import Backend, Store

pytestmark = pytest.mark.anyio

_TAIL = (
    "; a job id names one call: submit the same arguments to get the same job, or "
    "submit under another id (fn.options(job_id=...))"
)


class Line(pydantic.BaseModel):
    sku: str
    price: Decimal


@duron.durable
async def charge(
    ctx: duron.Context, order: int, amount: Decimal, note: str = "none"
) -> None:
    return None


@duron.durable
async def invoice(ctx: duron.Context, lines: list[Line]) -> None:
    return None


@duron.durable
async def label(ctx: duron.Context, text: str, copies: int = 1) -> None:
    return None


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.store()


async def first_entry(store: Store, job_id: str) -> dict[str, object]:
    entries = [orjson.loads(raw) async for _, raw in store.read_log(job_id)]
    assert len(entries) == 1
    entry: dict[str, object] = entries[0]
    return entry


async def test_equal_decimals_written_differently_are_the_same_call(
    store: Store,
) -> None:
    job = charge.options(job_id="o1")
    assert await store.submit(job, 1, Decimal("12.50")) == "o1"
    assert await store.submit(job, 1, Decimal("12.5")) == "o1"
    assert await store.submit(job, order=1, amount=Decimal("12.500")) == "o1"
    # Nothing changed: the log holds the first submit's call.
    assert (await first_entry(store, "o1"))["args"] == {"order": 1, "amount": "12.50"}
    assert [j.id for j in await store.list_jobs()] == ["o1"]


async def test_equal_models_with_decimals_written_differently_are_the_same_call(
    store: Store,
) -> None:
    job = invoice.options(job_id="i1")
    await store.submit(job, [Line(sku="a", price=Decimal("1.10"))])
    assert await store.submit(job, [Line(sku="a", price=Decimal("1.1"))]) == "i1"


async def test_an_argument_left_out_is_its_default(store: Store) -> None:
    job = label.options(job_id="l1")
    await store.submit(job, "hello")
    assert await store.submit(job, "hello", copies=1) == "l1"
    assert await store.submit(job, "hello", 1) == "l1"
    message = (
        "job l1 was already submitted as label(text='hello'), not "
        "label(text='hello', copies=2): argument 'copies' differs (recorded "
        "(not given: default 1), requested 2)" + _TAIL
    )
    with pytest.raises(duron.DuplicateJobError, match=f"^{re.escape(message)}$") as e:
        await store.submit(job, "hello", copies=2)
    assert (e.value.argument, e.value.recorded_value, e.value.requested_value) == (
        "copies",
        "(not given: default 1)",
        "2",
    )


async def test_a_conflict_names_the_first_argument_that_differs_in_parameter_order(
    store: Store,
) -> None:
    job = charge.options(job_id="o2")
    await store.submit(job, 7, Decimal("3.00"), note="gift")
    message = (
        "job o2 was already submitted as charge(order=7, amount='3.00', "
        "note='gift'), not charge(order=7, amount='4', note='card'): argument "
        "'amount' differs (recorded '3.00', requested '4')" + _TAIL
    )
    # Keywords in another order: still the function's order that counts.
    with pytest.raises(duron.DuplicateJobError, match=f"^{re.escape(message)}$"):
        await store.submit(job, note="card", amount=Decimal("4"), order=7)


async def test_long_values_that_differ_near_their_end_show_the_difference(
    store: Store,
) -> None:
    job = label.options(job_id="l2")
    await store.submit(job, "x" * 200 + "-first")
    with pytest.raises(duron.DuplicateJobError) as e:
        await store.submit(job, "x" * 200 + "-second")
    # The calls are cut at 60 characters each and print alike; the argument's
    # values are cut just before their first difference.
    shown = "'" + "x" * 56 + "..."
    assert e.value.recorded == f"label(text={shown})"
    assert e.value.requested == f"label(text={shown})"
    was, now = e.value.recorded_value, e.value.requested_value
    assert (was, now) == (
        "..." + "x" * 29 + "-first'",
        "..." + "x" * 29 + "-second'",
    )
    message = (
        f"job l2 was already submitted as label(text={shown}), not "
        f"label(text={shown}): argument 'text' differs (recorded {was}, "
        f"requested {now})" + _TAIL
    )
    assert str(e.value) == message


async def test_another_function_under_the_id_is_named(store: Store) -> None:
    await store.submit(label.options(job_id="x"), "a")
    message = (
        "job x was already submitted as label(text='a'), not "
        "charge(order=1, amount='1')" + _TAIL
    )
    with pytest.raises(duron.DuplicateJobError, match=f"^{re.escape(message)}$") as e:
        await store.submit(charge.options(job_id="x"), 1, Decimal(1))
    assert e.value.argument is None


async def test_a_recorded_argument_that_no_longer_decodes_is_compared_as_stored(
    store: Store,
) -> None:
    await store.submit(label.options(job_id="l3"), "seven")

    @duron.durable(name="label")
    async def counted(ctx: duron.Context, text: int) -> None:
        return None

    # "seven" is no int: another call than 7.
    message = (
        "job l3 was already submitted as label(text='seven'), not label(text=7): "
        "argument 'text' differs (recorded 'seven', requested 7)" + _TAIL
    )
    with pytest.raises(duron.DuplicateJobError, match=f"^{re.escape(message)}$"):
        await store.submit(counted.options(job_id="l3"), 7)
    # Where it decodes, today's types decide: "7" read as an int is 7.
    await store.submit(label.options(job_id="l4"), "7")
    assert await store.submit(counted.options(job_id="l4"), 7) == "l4"
