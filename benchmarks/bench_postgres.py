"""PostgreSQL job store benchmark: µs per effect, and jobs per second with 1, 2 and
4 worker processes, on the local server.

Run it with ``.venv/bin/python benchmarks/bench_postgres.py`` (``--quick`` for a
short look, ``--json FILE`` to keep the figures). The server is the one
``DURON_TEST_POSTGRES_DSN`` (or ``--dsn``) names; ``eval "$(bash .ci/postgres.sh)"``
starts the local one and sets it. Every figure comes from a fresh interpreter
(``_postgres_worker.py``) on a schema of its own, dropped afterwards. See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import BENCH, python, run_json, run_workers, say

WORKER = BENCH / "_postgres_worker.py"
LOCAL_DSN = "postgresql://duron_test:duron_test@127.0.0.1:5432/duron_test"


@dataclass(frozen=True)
class Sizes:
    seq_n: int
    many_jobs: int
    many_steps: int
    rate_jobs: int
    rate_steps: int


FULL = Sizes(300, 100, 10, 1000, 3)
QUICK = Sizes(100, 50, 10, 300, 3)


def sql(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement.encode())
        return cur.fetchall() if cur.description else []


class Schema:
    """A schema for one measurement, migrated on entry and dropped on exit."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = f"duron_bench_{secrets.token_hex(4)}"

    def __enter__(self) -> Schema:
        r = subprocess.run(
            [
                python(),
                "-m",
                "duron",
                "db",
                "migrate",
                f"{self.dsn}{'&' if '?' in self.dsn else '?'}schema={self.name}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip() or r.stdout.strip())
        return self

    def __exit__(self, *exc: object) -> None:
        sql(self.dsn, f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')

    def command(self, mode: str, *extra: str) -> list[str]:
        """The command for one ``_postgres_worker.py`` run on this schema."""
        return [
            python(),
            str(WORKER),
            mode,
            "--dsn",
            self.dsn,
            "--schema",
            self.name,
            *extra,
        ]

    def run(self, mode: str, *extra: str) -> dict[str, Any]:
        return run_json(self.command(mode, *extra), timeout=600)


def seq(dsn: str, n: int) -> dict[str, Any]:
    with Schema(dsn) as s:
        return s.run("seq", "--n", str(n))


def many(dsn: str, jobs: int, steps: int) -> dict[str, Any]:
    with Schema(dsn) as s:
        return s.run("many", "--jobs", str(jobs), "--steps", str(steps))


def rate(dsn: str, workers: int, jobs: int, steps: int) -> dict[str, Any]:
    """Jobs per second with ``workers`` worker processes on one schema."""
    with Schema(dsn) as s, tempfile.TemporaryDirectory() as tmp:
        s.run("submit", "--jobs", str(jobs), "--steps", str(steps))
        go = Path(tmp) / "go"
        worker = s.command("worker", "--go", str(go), "--concurrency", "64")
        start, outs = run_workers([worker] * workers, go)
        done = sql(
            dsn,
            f"SELECT count(*) FROM \"{s.name}\".jobs WHERE status = 'completed'",
        )[0][0]
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs completed")
    return {
        "seconds": max(o["done_at"] for o in outs) - start,
        "jobs": jobs,
        "per_worker": [o["ended"] for o in outs],
        "effects_run": sum(o["runs"] for o in outs),
        "flushes": sum(o["flushes"] for o in outs),
        "appends": sum(o["appends"] for o in outs),
    }


def attempt(what: str, fn: Any, *args: Any) -> dict[str, Any] | None:
    say(what)
    try:
        out: dict[str, Any] = fn(*args)
    except Exception as exc:
        say(f"{what}: failed: {exc}")
        return None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=os.environ.get("DURON_TEST_POSTGRES_DSN"))
    p.add_argument("--quick", action="store_true", help="smaller workloads")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args()
    dsn = args.dsn or LOCAL_DSN
    sizes = QUICK if args.quick else FULL
    try:
        version = sql(dsn, "SELECT current_setting('server_version')")[0][0]
        sync = sql(dsn, "SELECT current_setting('synchronous_commit')")[0][0]
    except Exception as exc:
        print(
            f"bench_postgres: cannot reach PostgreSQL at {dsn}: {exc}\n"
            'start the local server with: eval "$(bash .ci/postgres.sh)"',
            file=sys.stderr,
        )
        return 2

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "postgres": version,
        "synchronous_commit": sync,
        "load": os.getloadavg()[0],
        "sizes": sizes.__dict__,
    }
    # The same with commits that do not wait for the server's WAL flush: what
    # Duron and the round trips cost, without the disk's fsync latency.
    nosync = dsn + ("&" if "?" in dsn else "?") + "options=-csynchronous_commit%3Doff"
    for key, where in (("", dsn), ("_nosync", nosync)):
        results["seq" + key] = attempt(
            f"1 job, {sizes.seq_n} effects{key}", seq, where, sizes.seq_n
        )
        results["many" + key] = attempt(
            f"{sizes.many_jobs} jobs x {sizes.many_steps} effects{key}",
            many,
            where,
            sizes.many_jobs,
            sizes.many_steps,
        )
    for workers in (1, 2, 4):
        results[f"rate{workers}"] = attempt(
            f"{sizes.rate_jobs} jobs x {sizes.rate_steps} effects, {workers} worker(s)",
            rate,
            dsn,
            workers,
            sizes.rate_jobs,
            sizes.rate_steps,
        )

    print(
        f"\nPostgreSQL {version} (synchronous_commit={sync}), Python "
        f"{results['python']}, {os.cpu_count()} cores, load {results['load']:.1f}\n"
    )
    print(
        "| workload | µs per effect | effects per flush | µs per effect, "
        "synchronous_commit=off |"
    )
    print("|---|---|---|---|")
    for key, label in (
        ("seq", f"1 job, {sizes.seq_n} sequential effects"),
        ("many", f"{sizes.many_jobs} jobs x {sizes.many_steps} effects at once"),
    ):
        cells = []
        for r in (results[key], results[key + "_nosync"]):
            cells.append(
                "failed" if r is None else f"{r['seconds'] / r['effects'] * 1e6:,.0f}"
            )
        r = results[key]
        per = "" if r is None else f"{r['effects'] / max(1, r['flushes']):.1f}"
        print(f"| {label} | {cells[0]} | {per} | {cells[1]} |")
    print(
        f"\n| worker processes ({sizes.rate_jobs} jobs x {sizes.rate_steps} effects) "
        "| jobs per second | jobs per worker | appends per flush |"
    )
    print("|---|---|---|---|")
    for workers in (1, 2, 4):
        r = results[f"rate{workers}"]
        if r is None:
            print(f"| {workers} | failed | | |")
            continue
        per = r["appends"] / max(1, r["flushes"])
        split = " / ".join(str(n) for n in r["per_worker"])
        print(f"| {workers} | {r['jobs'] / r['seconds']:,.0f} | {split} | {per:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
