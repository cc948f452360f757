"""Many jobs waiting for a person, one worker: suspension keeps it small.

Run it with ``.venv/bin/python benchmarks/bench_suspend.py`` (``--quick`` for 1,000
jobs instead of 10,000; PostgreSQL too when ``DURON_TEST_POSTGRES_DSN`` or
``--postgres URL`` names a database).

N ``expense`` jobs, each waiting on an approval future, are submitted; one worker
process (concurrency 16, ``suspend_after=0``) runs them until every one has reached
its wait and been suspended; then another process sends the N approvals and the
worker finishes every job. Printed: jobs per second to reach the wait and to
finish, and the worker's peak RSS (target: under 150 MiB, flat in N). The floor for
RSS is the same worker process running no job at all (imports, the store).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import BENCH, python, say

WORKER = BENCH / "_suspend_worker.py"
SCHEMA = "duron_bench_suspend"
TARGET_RSS = 150.0
os.environ["DURON_BENCH_SCHEMA"] = SCHEMA


def run(url: str, mode: str, n: int) -> None:
    subprocess.run([python(), str(WORKER), url, mode, str(n)], check=True, timeout=3600)


def measure(url: str, n: int) -> dict[str, float]:
    run(url, "submit", n)
    worker = subprocess.Popen(
        [python(), str(WORKER), url, "work", str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready"
    first = json.loads(worker.stdout.readline())
    t = time.monotonic()
    run(url, "approve", n)
    sent = time.monotonic() - t
    out, _ = worker.communicate(timeout=3600)
    last = json.loads(out.strip().splitlines()[-1])
    return {
        "waiting": first["waiting"],
        "rss_waiting": first["rss"],
        "approve": sent,
        "ended": last["ended"] - first["waiting"],
        "rss": last["rss"],
    }


def reset(url: str, tmp: Path, name: str) -> str:
    if url.startswith("sqlite:"):
        return f"sqlite:{tmp / name}.db"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", default=os.environ.get("DURON_TEST_POSTGRES_DSN"))
    args = parser.parse_args()
    n = 1000 if args.quick else 10_000
    stores = [("SQLite", "sqlite:")]
    if args.postgres:
        stores.append(("PostgreSQL", args.postgres))
    print(f"{n} jobs waiting for an approval; one worker, concurrency 16")
    print(
        f"{'store':<11} {'to wait, jobs/s':>15} {'RSS waiting':>12} "
        f"{'to finish, jobs/s':>18} {'peak RSS':>9} {'floor':>7} {'target':>7}"
    )
    with tempfile.TemporaryDirectory(dir=BENCH) as d:
        tmp = Path(d)
        for name, url in stores:
            say(f"{name}: floor (a worker with no job)")
            floor = measure(reset(url, tmp, "floor"), 0)["rss"]
            say(f"{name}: {n} jobs")
            r = measure(reset(url, tmp, "jobs"), n)
            print(
                f"{name:<11} {n / r['waiting']:>15.0f} {r['rss_waiting']:>9.0f} MiB "
                f"{n / r['ended']:>18.0f} {r['rss']:>5.0f} MiB "
                f"{floor:>3.0f} MiB {TARGET_RSS:>4.0f} MiB"
                f"{'' if r['rss'] < TARGET_RSS else '  OVER TARGET'}"
            )


if __name__ == "__main__":
    sys.exit(main())
