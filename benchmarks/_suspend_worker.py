"""The processes of ``bench_suspend.py``.

``python _suspend_worker.py URL submit N``: submit N ``expense`` jobs.
``python _suspend_worker.py URL work N``: run a Worker (concurrency 16,
``suspend_after=0``) until all N jobs ended; print a JSON line with the time every
job first reached its wait (suspended), the time all ended, and this process's
peak RSS.
``python _suspend_worker.py URL approve N``: complete each job's approval future.
"""

from __future__ import annotations

import json
import os
import sys
import time

import anyio

import duron
from duron.contrib.storage import PostgresStore, SQLiteStore


@duron.durable
async def expense(ctx: duron.Context, n: int) -> str:
    _, decision = await ctx.create_future(str, name="approval")
    return f"{n} {await decision}"


def open_store(url: str) -> SQLiteStore | PostgresStore:
    if url.startswith("sqlite:"):
        return SQLiteStore(url.removeprefix("sqlite:"))
    return PostgresStore(url, schema=os.environ.get("DURON_BENCH_SCHEMA", "duron"))


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def count(store: SQLiteStore | PostgresStore, status: str) -> int:
    return len(await store.list_jobs(status))  # type: ignore[arg-type]


async def main(url: str, mode: str, n: int) -> None:
    async with open_store(url) as store:
        if mode == "submit":
            if isinstance(store, PostgresStore):
                await store.migrate()
            for i in range(n):
                await store.submit(expense.options(job_id=f"e{i}"), i)
            return
        if mode == "approve":
            for i in range(n):
                await store.complete_future(f"e{i}", "0", result="ok")
            return
        start = time.monotonic()
        waiting_at = None
        async with duron.Worker(store, [expense], concurrency=16, suspend_after=0):
            print("ready", flush=True)
            while True:
                await anyio.sleep(0.25)
                if waiting_at is None and await count(store, "suspended") >= n:
                    waiting_at = time.monotonic() - start
                    print(
                        json.dumps({"waiting": waiting_at, "rss": peak_rss_mib()}),
                        flush=True,
                    )
                if await count(store, "completed") >= n:
                    break
        print(
            json.dumps(
                {
                    "waiting": waiting_at,
                    "ended": time.monotonic() - start,
                    "rss": peak_rss_mib(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
