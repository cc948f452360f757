"""How fast the jobs of a killed worker run again elsewhere, and what leases cost.

Run it with ``.venv/bin/python benchmarks/bench_recovery.py`` (``--quick`` for one
round; PostgreSQL too when ``DURON_TEST_POSTGRES_DSN`` or ``--postgres URL`` names a
database). Everything runs with the stores' and the worker's defaults.

* **recovery**: worker A runs a job whose effect never ends; worker B idles on the
  same store. A is killed with SIGKILL; the figure is the time until B starts the
  job's effect again. Target: under 10 s. The floor is what the defaults allow at
  best: the lease's life left at the kill (at least two thirds of it, the renewer
  runs every third) and nothing for the poll. The bound is the worst case: a lease
  renewed just before the kill, plus one poll interval.
* **heartbeats**: one worker process holding N running jobs (each waiting in an
  effect) for a while: its CPU time per second of wall time, from lease renewals
  and the worker's heartbeats (cancel requests, lost leases).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import BENCH, python, say

from duron.contrib._sqlstore import DEFAULT_LEASE

WORKER = BENCH / "_recovery_worker.py"
POLL = 0.5  # duron.Worker's default poll_interval
TARGET = 10.0
SCHEMA = "duron_bench_recovery"  # a schema of its own: never a test's
os.environ["DURON_BENCH_SCHEMA"] = SCHEMA


def spawn(url: str, side: Path, submit: int = 0) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [python(), str(WORKER), url, str(side), "--submit", str(submit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        p.kill()
        raise RuntimeError(f"worker did not start: {p.communicate()[1][-500:]}")
    return p


def started(side: Path) -> list[tuple[str, int]]:
    if not side.exists():
        return []
    out = []
    for line in side.read_text().splitlines():
        _, job, pid = line.split()
        out.append((job, int(pid)))
    return out


def wait_for(check: object, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError("timed out")


def recovery(url: str, tmp: Path, round_: int) -> float:
    side = tmp / f"side{round_}.txt"
    a = spawn(url, side, submit=1)
    b: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: started(side), 30)
        b = spawn(url, side)
        time.sleep(1.0)  # B polls; the lease is A's, renewed
        killed = time.monotonic()
        a.send_signal(signal.SIGKILL)
        a.wait()
        back = wait_for(lambda: any(pid == b.pid for _, pid in started(side)), 60)
        return back - killed
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def heartbeats(url: str, tmp: Path, n: int, seconds: float) -> float:
    side = tmp / f"hb{n}.txt"
    p = spawn(url, side, submit=n)
    try:
        wait_for(lambda: len(started(side)) >= n, 60)
        t0 = _cpu(p.pid)
        time.sleep(seconds)
        return (_cpu(p.pid) - t0) / seconds
    finally:
        p.kill()
        p.wait()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


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
    rounds = 1 if args.quick else 3
    window = 8.0 if args.quick else 24.0
    stores = [("SQLite", "sqlite:")]
    if args.postgres:
        stores.append(("PostgreSQL", args.postgres))
    floor = DEFAULT_LEASE * 2 / 3
    bound = DEFAULT_LEASE + POLL
    print(
        f"defaults: lease {DEFAULT_LEASE:g} s, renewed every {DEFAULT_LEASE / 3:.2f} s, "
        f"worker poll {POLL:g} s"
    )
    print(
        f"{'store':<11} {'recovery after SIGKILL':>24} {'floor':>7} {'bound':>7} "
        f"{'target':>7}"
    )
    with tempfile.TemporaryDirectory(dir=BENCH) as d:
        tmp = Path(d)
        for name, url in stores:
            times = []
            for r in range(rounds):
                say(f"{name}: recovery round {r + 1}")
                times.append(recovery(reset(url, tmp, f"rec{r}"), tmp, r))
            worst = max(times)
            print(
                f"{name:<11} {f'median {statistics.median(times):.2f} s, max {worst:.2f} s':>24} "
                f"{floor:>6.2f}s {bound:>6.2f}s {TARGET:>6.1f}s"
                f"{'' if worst < TARGET else '  OVER TARGET'}"
            )
        print()
        print(f"{'store':<11} {'jobs held':>9} {'worker CPU while idle':>22}")
        for name, url in stores:
            for n in (16, 256):
                say(f"{name}: heartbeats with {n} jobs")
                share = heartbeats(reset(url, tmp, f"hb{n}"), tmp, n, window)
                print(f"{name:<11} {n:>9} {share * 100:>20.2f} %")


if __name__ == "__main__":
    sys.exit(main())
