"""The job the inbox tests run in worker processes, and the worker's entry point.

``python tests/inbox_jobs.py URL`` runs a :class:`duron.Worker` on the store the
URL names (``sqlite:////abs/path.db``, or ``postgresql://...?schema=NAME``) with a
one-second lease, until it is killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import duron

LEASE = 1.0


@duron.durable
async def collect(
    ctx: duron.Context,
    tag: str,
    items: duron.Stream[int] = duron.Provided,
    out: duron.StreamWriter[int] = duron.Provided,
) -> list[int]:
    """Take values until the stream closes (echoing each times ten on ``out``),
    then wait for future ``1`` (a string) and end with what came."""
    got: list[int] = []
    async for value in items:
        got.append(value)
        await out.send(value * 10)
    await out.close()
    _, approval = await ctx.create_future(str, name="approval")
    return [*got, len(await approval)]


def store_from(url: str) -> duron.JobStore:
    from duron.contrib.storage import SQLiteStore

    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :], lease=LEASE)
    from duron.contrib._postgres import store_from_url

    return store_from_url(url, lease=LEASE)


async def _work(url: str) -> None:
    store = store_from(url)
    async with duron.Worker(store, [collect]):
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    anyio.run(_work, sys.argv[1])
