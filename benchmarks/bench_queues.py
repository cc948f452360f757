"""Jobs through a queue with a concurrency limit, and a schedule under kills.

Run it with ``.venv/bin/python benchmarks/bench_queues.py`` (``--quick`` for fewer
jobs and a 10-second schedule; PostgreSQL too when ``DURON_TEST_POSTGRES_DSN`` or
``--postgres URL`` names a database, in a schema of its own).

* **limited queue**: N tiny jobs (three effects each) in queue ``q``, limited to 4
  running at once across all workers, run by 1, 2 and 4 worker processes (8 slots
  each). Printed: jobs per second, and the most jobs seen running at once (from
  the first and last effect of each job, written by the workers): checked to be at
  most 4. The reference is the same jobs in a queue without a limit.
* **schedule**: a schedule firing every second, run by two worker processes, one
  of them killed (SIGKILL) and restarted every few seconds: exactly one job per
  tick is checked (no tick twice, none missing between the first and the last).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _bench import BENCH, python, say

WORKER = BENCH / "_queue_worker.py"
SCHEMA = "duron_bench_queues"
LIMIT = 4
os.environ["DURON_BENCH_SCHEMA"] = SCHEMA


def reset(url: str, tmp: Path, name: str) -> str:
    if url.startswith("sqlite:"):
        return f"sqlite:{tmp / name}.db"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return url


def spawn(side: Path, url: str, mode: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [python(), str(WORKER), str(side), url, mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        p.kill()
        raise RuntimeError("worker did not start")
    return p


def most_at_once(side: Path) -> int:
    events = []
    for line in side.read_text().splitlines():
        _, what, _, t = line.split()
        events.append((float(t), 1 if what == "start" else -1))
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


def limited(url: str, tmp: Path, procs: int, n: int, limit: bool) -> tuple[float, int]:
    side = tmp / f"q{procs}{limit}.txt"
    side.unlink(missing_ok=True)
    url = reset(url, tmp, f"q{procs}{limit}")
    subprocess.run(
        [python(), str(WORKER), str(side), url, "submit", str(n)], check=True
    )
    if not limit:
        subprocess.run([python(), str(WORKER), str(side), url, "unlimit"], check=True)
    side.unlink(missing_ok=True)
    start = time.monotonic()
    workers = [spawn(side, url, "work") for _ in range(procs)]
    for w in workers:
        w.wait(timeout=600)
    took = time.monotonic() - start
    return n / took, most_at_once(side)


def schedule(url: str, tmp: Path, seconds: int) -> tuple[int, int, int]:
    side = tmp / "ticks.txt"
    side.unlink(missing_ok=True)
    url = reset(url, tmp, "ticks")
    steady = spawn(side, url, "ticks")
    victim = spawn(side, url, "ticks")
    kills = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            time.sleep(2.5)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            victim = spawn(side, url, "ticks")
        time.sleep(2)  # the last ticks' jobs finish
    finally:
        for p in (steady, victim):
            p.kill()
            p.wait()
    ticks = [line.split()[1] for line in side.read_text().splitlines()]
    seen = sorted(ticks)
    stamps = sorted({t.split("@", 1)[1] for t in ticks})
    first, last = stamps[0], stamps[-1]
    span = int(
        (
            datetime.fromisoformat(last.rstrip("Z"))
            - datetime.fromisoformat(first.rstrip("Z"))
        ).total_seconds()
    )
    duplicates = len(seen) - len(set(seen))
    missing = span + 1 - len(stamps)
    return len(set(seen)), duplicates, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", default=os.environ.get("DURON_TEST_POSTGRES_DSN"))
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    seconds = 10 if args.quick else 60
    stores = [("SQLite", "sqlite:")]
    if args.postgres:
        stores.append(("PostgreSQL", args.postgres))
    print(f"{n} jobs of 3 effects in one queue; limit {LIMIT} running at once")
    print(
        f"{'store':<11} {'workers':>7} {'jobs/s':>8} {'most at once':>13} "
        f"{'no limit: jobs/s':>17} {'at once':>8}"
    )
    with tempfile.TemporaryDirectory(dir=BENCH) as d:
        tmp = Path(d)
        failed = False
        for name, url in stores:
            for procs in (1, 2, 4):
                say(f"{name}: {procs} worker process(es)")
                rate, peak = limited(url, tmp, procs, n, True)
                free_rate, free_peak = limited(url, tmp, procs, n, False)
                over = peak > LIMIT
                failed |= over
                print(
                    f"{name:<11} {procs:>7} {rate:>8.0f} {peak:>13} "
                    f"{free_rate:>17.0f} {free_peak:>8}"
                    + ("  OVER THE LIMIT" if over else "")
                )
        print()
        print(f"a schedule every second for {seconds} s, a worker killed every 2.5 s")
        print(f"{'store':<11} {'ticks':>6} {'twice':>6} {'missing':>8}")
        for name, url in stores:
            say(f"{name}: schedule")
            ticks, twice, missing = schedule(url, tmp, seconds)
            failed |= bool(twice or missing)
            print(f"{name:<11} {ticks:>6} {twice:>6} {missing:>8}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
