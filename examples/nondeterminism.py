"""What happens when the code no longer matches its log.

Run it: ``python examples/nondeterminism.py``. Version 1 of a durable function runs
and stops half-way (as if the process died). Version 2, deployed meanwhile, asks
for its effects in another order; resuming the old log with it fails with an error
that names the position, the byte offset and both calls, instead of handing the
first call's recorded result to the other call.
"""

import asyncio
import tempfile
from pathlib import Path

import duron
from duron.contrib.storage import FileLogStorage


@duron.effect
async def charge_card(order: int) -> str:
    return f"charged order {order}"


email_started = asyncio.Event()


@duron.effect
async def send_email(order: int) -> str:
    email_started.set()
    await asyncio.Event().wait()  # hangs: the job is stopped while it runs
    return f"emailed about order {order}"


# Both versions record the same function name, as one function edited between
# two deployments would.
@duron.durable(name="fulfil")
async def fulfil_v1(ctx: duron.Context, order: int) -> str:
    charged = await ctx.run(charge_card, order)
    emailed = await ctx.run(send_email, order)
    return f"{charged}, {emailed}"


@duron.durable(name="fulfil")
async def fulfil_v2(ctx: duron.Context, order: int) -> str:
    emailed = await ctx.run(send_email, order)
    charged = await ctx.run(charge_card, order)
    return f"{charged}, {emailed}"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "fulfil.jsonl")
        async with fulfil_v1.invoke(FileLogStorage(log)) as job:
            await job.start(42)
            # send_email starts only once charge_card's result is in the log.
            await email_started.wait()
        # Leaving the block stopped the job; the log holds the card charge.
        try:
            async with fulfil_v2.invoke(FileLogStorage(log)) as job:
                await job.resume()
                await job.wait()
        except duron.NonDeterminismError as exc:
            print(type(exc).__name__ + ":", str(exc).replace(tmp, "/tmp/..."))
            print("position:", exc.position)
            print("recorded:", exc.recorded)
            print("requested:", exc.requested)


if __name__ == "__main__":
    asyncio.run(main())
