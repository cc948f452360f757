"""An HTTP service that runs durable checkouts: Starlette, one SQLite file, a Worker.

Needs two packages the library does not: ``pip install starlette uvicorn``.
Run it with ``python examples/service.py`` (or ``uvicorn examples.service:app``), then:

    curl -X POST localhost:8000/orders/42 -d '{"item": "book", "amount": 12.5}'
    curl localhost:8000/orders/42              # status, and the receipt once done
    curl 'localhost:8000/orders/42?wait=10'    # wait up to 10 s for the receipt
    curl -X POST localhost:8000/orders/42/cancel

An order over 100 waits for a person to approve it (or not), for days if need be,
holding no worker slot meanwhile (the worker suspends it). Any process can answer:
this one, another worker process of the service, or a shell:

    curl -X POST localhost:8000/orders/7 -d '{"item": "piano", "amount": 4200}'
    curl -X POST localhost:8000/orders/7/approve -d 'true'
    duron jobs send --import service sqlite:///orders.db order-7 approval true

Stop it (Ctrl-C) in the middle of a checkout and start it again: the worker resumes
the unfinished checkout from its log; the card is not charged twice. The same jobs
can be listed from a shell: ``duron jobs list sqlite:///orders.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pydantic
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import duron
from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from starlette.requests import Request


class Order(pydantic.BaseModel):
    item: str
    amount: float


class Receipt(pydantic.BaseModel):
    order_id: int
    charge_id: str
    shipped: bool


@duron.effect
async def reserve_stock(item: str) -> bool:
    await asyncio.sleep(0.5)  # stands in for a call to the inventory service
    return True


@duron.effect
async def charge_card(order_id: int, amount: float) -> str:
    await asyncio.sleep(1)  # the payment provider
    print(f"charged {amount} for order {order_id}")
    return f"ch_{random.randrange(10**8):08d}"


@duron.effect
async def ship(order_id: int, item: str) -> bool:
    await asyncio.sleep(1)
    return True


APPROVAL_OVER = 100.0


@duron.durable
async def checkout(
    ctx: duron.Context,
    order_id: int,
    order: Order,
    approval: duron.Stream[bool] = duron.Provided,
) -> Receipt:
    if order.amount > APPROVAL_OVER and not await approval.next():
        raise PermissionError(f"order {order_id} was not approved")
    if not await ctx.run(reserve_stock, order.item):
        raise ValueError(f"{order.item} is out of stock")
    charge_id = await ctx.run(charge_card, order_id, order.amount)
    await asyncio.sleep(2)  # a durable timer: a restart waits only what is left
    shipped = await ctx.run(ship, order_id, order.item)
    return Receipt(order_id=order_id, charge_id=charge_id, shipped=shipped)


store = SQLiteStore(os.environ.get("ORDERS_DB", "orders.db"))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The worker runs jobs submitted by the handlers below, and on start-up every
    # job a previous run of the service left unfinished.
    async with duron.Worker(store, [checkout], concurrency=32, suspend_after=1.0):
        yield
    # Leaving the block stopped the running checkouts at a safe point.
    await store.close()


def job_id(request: Request) -> str:
    return f"order-{request.path_params['order_id']}"


async def create(request: Request) -> JSONResponse:
    try:
        order = Order.model_validate_json(await request.body())
    except pydantic.ValidationError as exc:
        return JSONResponse({"error": exc.errors(include_url=False)}, status_code=422)
    try:
        # The order id is the job id: a client retrying the request gets the
        # same job, not a second checkout.
        await store.submit(
            checkout.options(job_id=job_id(request)),
            request.path_params["order_id"],
            order,
        )
    except duron.DuplicateJobError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse({"job": job_id(request)}, status_code=202)


async def show(request: Request) -> JSONResponse:
    try:
        info = await store.get(job_id(request))
    except duron.JobNotFoundError:
        return JSONResponse({"error": "no such order"}, status_code=404)
    body: dict[str, object] = {"job": info.id, "status": info.status}
    wait = float(request.query_params.get("wait", 0))
    if wait > 0 and not info.finished:
        with contextlib.suppress(Exception):  # timed out, or the job failed
            await store.result(info.id, checkout, timeout=wait)
        info = await store.get(info.id)
        body["status"] = info.status
    if info.status == "completed":
        body["receipt"] = info.result
    elif info.error is not None:
        body["error"] = info.error.message
    return JSONResponse(body)


async def approve(request: Request) -> JSONResponse:
    """Approve (``true``) or refuse (``false``) an order waiting for it. Stored in
    the job's inbox, whichever process runs it, or none: the job records it when
    it next runs."""
    try:
        decision = pydantic.TypeAdapter(bool).validate_json(await request.body())
        writer = await store.open_stream(job_id(request), "approval", "w")
        await writer.send(decision)
    except pydantic.ValidationError:
        return JSONResponse({"error": "send true or false"}, status_code=422)
    except duron.JobNotFoundError:
        return JSONResponse({"error": "no such order"}, status_code=404)
    except duron.UsageError as exc:  # it ended, or was decided already
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse({"approval": decision}, status_code=202)


async def cancel(request: Request) -> JSONResponse:
    try:
        requested = await store.cancel(job_id(request))
    except duron.JobNotFoundError:
        return JSONResponse({"error": "no such order"}, status_code=404)
    return JSONResponse({"cancel": "requested" if requested else "already ended"})


app = Starlette(
    routes=[
        Route("/orders/{order_id:int}", create, methods=["POST"]),
        Route("/orders/{order_id:int}", show, methods=["GET"]),
        Route("/orders/{order_id:int}/approve", approve, methods=["POST"]),
        Route("/orders/{order_id:int}/cancel", cancel, methods=["POST"]),
    ],
    lifespan=lifespan,
)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, port=int(os.environ.get("PORT", "8000")))
