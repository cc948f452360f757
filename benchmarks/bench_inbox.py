"""Input latency through a job store: from ``send`` in another process to durable
code seeing the value, p50 and p99, on SQLite and PostgreSQL.

A worker in this process runs one job whose durable code reads a
``Stream[float]`` and, for each value (the sender's ``time.time()`` when it began
to send), runs an effect that notes ``time.time() - value``. A sender process
(this script with ``--send``) sends ``N`` values, one every 20 ms, through
``store.open_stream(job, "items", "w")`` and times each ``send`` (the store's
write: the floor, since durable code cannot see a value before it is stored).

Run it with ``.venv/bin/python benchmarks/bench_inbox.py`` (``--quick`` for fewer
values, ``--store sqlite|postgres`` for one). PostgreSQL uses the server
``DURON_TEST_POSTGRES_DSN`` (or ``--dsn``) names, in a schema of its own, dropped
afterwards; it is skipped, saying so, when none answers. Targets: p50 under 20 ms
on PostgreSQL, under 50 ms on SQLite.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import duron

TARGET_P50 = {"sqlite": 0.050, "postgres": 0.020}
LOCAL_DSN = "postgresql://duron_test:duron_test@127.0.0.1:5432/duron_test"
seen: list[float] = []


@duron.effect
async def note(sent: float) -> None:
    seen.append(time.time() - sent)


@duron.durable
async def listen(
    ctx: duron.Context, items: duron.Stream[float] = duron.Provided
) -> int:
    n = 0
    async for sent in items:
        await ctx.run(note, sent)
        n += 1
    return n


def open_store(url: str) -> Any:
    from duron._cli.jobs import open_store as from_url

    if url.startswith("sqlite:///"):
        from duron.contrib.storage import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :])
    return from_url(url)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the sender process -------------------------------------------------------------


async def send(url: str, job_id: str, n: int) -> None:
    store = open_store(url)
    try:
        writer = await store.open_stream(job_id, "items", "w", fn=listen)
        took = []
        for _ in range(n):
            t0 = time.time()
            await writer.send(t0)
            took.append(time.time() - t0)
            await anyio.sleep(0.02)
        await writer.close()
        print(statistics.median(took))
    finally:
        await store.close()


# -- the measuring process ----------------------------------------------------------


async def measure(url: str, n: int) -> tuple[list[float], float]:
    seen.clear()
    store = open_store(url)
    try:
        job_id = await store.submit(
            listen.options(job_id=f"bench-{secrets.token_hex(3)}")
        )
        async with duron.Worker(store, [listen], poll_interval=0.05):
            await anyio.sleep(0.3)  # the job is running and waits for input
            proc = await anyio.run_process(
                [sys.executable, __file__, "--send", url, job_id, str(n)],
                check=True,
            )
            assert await store.result(job_id, timeout=30) == n
        floor = float(proc.stdout.decode().strip())
        return list(seen), floor
    finally:
        await store.close()


def report(kind: str, latencies: list[float], floor: float) -> None:
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    target = TARGET_P50[kind]
    verdict = "ok" if p50 < target else "OVER TARGET"
    print(
        f"{kind:<9} n={len(latencies):<4} p50 {p50 * 1000:7.2f} ms  "
        f"p99 {p99 * 1000:7.2f} ms  floor (send p50) {floor * 1000:6.2f} ms  "
        f"target p50 < {target * 1000:.0f} ms: {verdict}"
    )


def postgres_url(dsn: str) -> tuple[str, str] | None:
    try:
        import psycopg

        psycopg.connect(dsn, connect_timeout=2).close()
    except Exception as exc:
        print(f"postgres  skipped: no server at the DSN ({type(exc).__name__})")
        return None
    schema = f"duron_bench_{secrets.token_hex(4)}"
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}schema={schema}", schema


async def run_postgres(dsn: str, n: int) -> None:
    found = postgres_url(dsn)
    if found is None:
        return
    url, schema = found
    from duron.contrib._postgres import store_from_url

    store = store_from_url(url)
    await store.migrate()
    await store.close()
    try:
        latencies, floor = await measure(url, n)
        report("postgres", latencies, floor)
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())


async def main(args: argparse.Namespace) -> None:
    n = 50 if args.quick else 300
    print(f"input latency, send in another process -> durable code, {n} values")
    if args.store in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            store = open_store(url)
            await store.list_jobs()  # creates the file and its tables
            await store.close()
            latencies, floor = await measure(url, n)
            report("sqlite", latencies, floor)
    if args.store in (None, "postgres"):
        await run_postgres(args.dsn, n)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    if len(sys.argv) == 5 and sys.argv[1] == "--send":
        anyio.run(send, sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 values, not 300")
    parser.add_argument("--store", choices=("sqlite", "postgres"))
    parser.add_argument(
        "--dsn", default=os.environ.get("DURON_TEST_POSTGRES_DSN", LOCAL_DSN)
    )
    anyio.run(main, parser.parse_args())
