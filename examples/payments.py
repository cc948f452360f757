"""Charging a card exactly once: a retry policy and an idempotency key.

Run it: ``python examples/payments.py`` (in an empty folder: it writes
``checkout.jsonl`` and ``bank.db`` there). It starts the checkout in another
process, which the bank answers with a 503 first (the retry policy tries again
0.2 s later), then charges the card and hangs before answering. That process is
killed with SIGKILL: the charge happened, but its result never reached the log.
The job is then resumed here: the charge runs again, with the same idempotency
key (``duron.current_operation().key``), and the bank, which deduplicates by key,
answers with the charge it already made. The card is charged once.

``python examples/payments.py run`` only runs (or resumes) the job.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio

import duron
from duron.contrib.storage import FileLogStorage

LOG = Path("checkout.jsonl")
BANK = Path("bank.db")


class ServiceUnavailable(Exception):
    """The bank answered 503: worth trying again."""


class FakeBank:
    """A payment API that deduplicates charges by idempotency key (in SQLite, so
    that every process sees the same ledger)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS charges"
            " (key TEXT PRIMARY KEY, order_id INTEGER, cents INTEGER, id TEXT)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS requests (key TEXT)")

    def charge(self, key: str, order_id: int, cents: int) -> str:
        self.db.execute("INSERT INTO requests VALUES (?)", (key,))
        (seen,) = self.db.execute("SELECT count(*) FROM requests").fetchone()
        if seen == 1:
            raise ServiceUnavailable("503: the bank is busy, try again")
        found = self.db.execute(
            "SELECT id FROM charges WHERE key = ?", (key,)
        ).fetchone()
        if found is not None:
            return str(found[0])  # the same request again: the same answer
        charge_id = f"ch_{order_id}_{key[:8]}"
        self.db.execute(
            "INSERT INTO charges VALUES (?, ?, ?, ?)", (key, order_id, cents, charge_id)
        )
        if os.environ.get("FAKE_BANK_HANG"):
            time.sleep(3600)  # charged, but the answer never comes back
        return charge_id

    def ledger(self) -> list[tuple[str, int, int, str]]:
        return self.db.execute("SELECT * FROM charges").fetchall()

    def requests(self) -> int:
        (n,) = self.db.execute("SELECT count(*) FROM requests").fetchone()
        return int(n)


@duron.effect(retry=duron.RetryPolicy(max_attempts=5, initial_interval=0.2, jitter=0.0))
def charge_card(order_id: int, cents: int) -> str:
    # The key is the same on every attempt, after every crash, on every worker.
    key = duron.current_operation().key
    return FakeBank(BANK).charge(key, order_id, cents)


@duron.effect
async def send_receipt(order_id: int, charge_id: str) -> str:
    return f"receipt for order {order_id}: {charge_id}"


@duron.durable
async def checkout(ctx: duron.Context, order_id: int, cents: int) -> str:
    charge_id = await ctx.run(charge_card, order_id, cents)
    return await ctx.run(send_receipt, order_id, charge_id)


async def run_job() -> str:
    async with checkout.invoke(FileLogStorage(LOG)) as job:
        await job.start(42, 1999)
        return await job.wait()


def charged() -> bool:
    return BANK.exists() and bool(FakeBank(BANK).ledger())


def main() -> None:
    for path in (LOG, BANK):
        path.unlink(missing_ok=True)
    print("checkout of order 42 starts in another process")
    worker = subprocess.Popen(
        [sys.executable, __file__, "run"], env={**os.environ, "FAKE_BANK_HANG": "1"}
    )
    deadline = time.monotonic() + 30
    while not charged():
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            raise SystemExit("the worker never reached the bank")
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    kinds = [line.split('"')[3] for line in LOG.read_text().splitlines()]
    print(f"  killed after the bank charged the card; the log holds: {kinds}")
    print("resumed here:")
    print(f"  {anyio.run(run_job)}")
    bank = FakeBank(BANK)
    ledger = bank.ledger()
    print(f"  the bank got {bank.requests()} requests with one key")
    print(f"  card charged {len(ledger)} time(s) for order 42")


if __name__ == "__main__":
    if sys.argv[1:] == ["run"]:
        print(anyio.run(run_job))
    else:
        main()
