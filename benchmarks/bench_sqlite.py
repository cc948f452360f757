"""SQLite job store benchmark: µs per effect and jobs per second, against DBOS.

Run it with ``.venv/bin/python benchmarks/bench_sqlite.py`` (``--quick`` for a short
look, ``--no-dbos`` to skip DBOS, ``--json FILE`` to keep the figures).

Every figure comes from a fresh interpreter (``_sqlite_worker.py`` for Duron,
``_dbos_worker.py`` for DBOS) on a store file in a temporary directory on the same
disk as this checkout (``--dir`` to choose another). DBOS is installed on demand into
``benchmarks/.venv-dbos`` (git-ignored); if pip cannot install it, or it cannot run,
the table says why and shows Duron alone. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import BENCH, ROOT, python, run_json, run_workers, say

OURS = BENCH / "_sqlite_worker.py"
THEIRS = BENCH / "_dbos_worker.py"
DBOS_VENV = BENCH / ".venv-dbos"
DBOS_SPEC = "dbos"
TARGET = 10.0  # issue 5: at least 10x DBOS per step in durable mode


@dataclass(frozen=True)
class Sizes:
    seq_n: int
    many_jobs: int
    many_steps: int
    rate_jobs: int
    rate_steps: int
    dbos_seq_n: int
    dbos_many_jobs: int
    dbos_rate_jobs: int


FULL = Sizes(300, 100, 10, 1000, 3, 200, 50, 100)
QUICK = Sizes(100, 50, 10, 300, 3, 50, 20, 30)


def dbos_python(install: bool) -> tuple[str | None, str]:
    py = DBOS_VENV / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('dbos'))"]

    def version() -> str | None:
        r = subprocess.run(probe, capture_output=True, text=True, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    if py.exists() and version():
        return str(py), f"DBOS {version()}"
    if not install:
        return None, f"{DBOS_VENV.name} has no DBOS (run without --no-install)"
    say(f"creating {DBOS_VENV.relative_to(ROOT)} and installing {DBOS_SPEC} with pip")
    for cmd in (
        [sys.executable, "-m", "venv", "--clear", str(DBOS_VENV)],
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            DBOS_SPEC,
        ],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()
            return None, f"cannot install DBOS: {tail[-1] if tail else r.returncode}"
    v = version()
    return (str(py), f"DBOS {v}") if v else (None, "DBOS did not import after install")


# -- the runs --------------------------------------------------------------------------


def ours(mode: str, db: Path, durability: str, **opts: object) -> list[str]:
    """The command for one ``_sqlite_worker.py`` run."""
    cmd = [python(), str(OURS), mode, "--db", str(db), "--durability", durability]
    for k, v in opts.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def ours_seq(d: Path, durability: str, n: int) -> dict[str, Any]:
    return run_json(ours("seq", d / f"seq-{durability}.db", durability, n=n), 600)


def ours_many(d: Path, durability: str, jobs: int, steps: int) -> dict[str, Any]:
    db = d / f"many-{durability}.db"
    return run_json(ours("many", db, durability, jobs=jobs, steps=steps), 600)


def ours_rate(
    d: Path, durability: str, workers: int, jobs: int, steps: int
) -> dict[str, Any]:
    """Jobs per second with ``workers`` worker processes on one store file."""
    db = d / f"rate-{durability}-{workers}.db"
    go = d / f"go-{durability}-{workers}"
    run_json(ours("submit", db, durability, jobs=jobs, steps=steps), 600)
    worker = ours("worker", db, durability, go=go, concurrency=64)
    start, outs = run_workers([worker] * workers, go)
    with sqlite3.connect(db) as conn:
        done = conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'completed'"
        ).fetchone()[0]
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs completed")
    seconds = max(o["done_at"] for o in outs) - start
    return {
        "seconds": seconds,
        "jobs": jobs,
        "per_worker": [o["ended"] for o in outs],
        "effects_run": sum(o["runs"] for o in outs),
    }


def dbos_run(py: str, d: Path, mode: str, **kw: int) -> dict[str, Any]:
    cmd = [
        py,
        str(THEIRS),
        mode,
        "--db",
        str(d / f"dbos-{mode}-{kw.get('jobs', 0)}.sqlite"),
    ]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    return run_json(cmd, timeout=900)


# -- output ----------------------------------------------------------------------------


def us(r: dict[str, Any] | None) -> str:
    if r is None or "error" in r:
        return "-"
    return f"{r['seconds'] / r['effects'] * 1e6:,.0f}"


def rate(r: dict[str, Any] | None) -> str:
    if r is None or "error" in r:
        return "-"
    return f"{r['jobs'] / r['seconds']:,.0f}"


def ratio(
    theirs: dict[str, Any] | None, ours: dict[str, Any] | None, key: str
) -> float | None:
    if not theirs or not ours or "error" in theirs or "error" in ours:
        return None
    if key == "us":
        return (theirs["seconds"] / theirs["effects"]) / (
            ours["seconds"] / ours["effects"]
        )
    return (ours["jobs"] / ours["seconds"]) / (theirs["jobs"] / theirs["seconds"])


def attempt(what: str, fn: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    say(what)
    try:
        return fn(*args, **kw)  # type: ignore[no-any-return]
    except Exception as exc:  # a failed run is reported, never counted
        say(f"{what}: failed: {exc}")
        return {"error": str(exc)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller workloads (~30 s)")
    p.add_argument("--no-dbos", action="store_true", help="measure Duron alone")
    p.add_argument("--no-install", action="store_true", help="never run pip")
    p.add_argument("--dir", type=Path, help="where the store files go")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args()
    sizes = QUICK if args.quick else FULL
    base = args.dir or ROOT
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="duron-bench-sqlite-", dir=base) as tmp:
        d = Path(tmp)
        dbos_py, dbos_note = (None, "skipped (--no-dbos)")
        if not args.no_dbos:
            dbos_py, dbos_note = dbos_python(not args.no_install)
        for durability in ("flush", "fsync"):
            results[f"seq-{durability}"] = attempt(
                f"Duron {durability}: 1 job x {sizes.seq_n} effects",
                ours_seq,
                d,
                durability,
                sizes.seq_n,
            )
            results[f"many-{durability}"] = attempt(
                f"Duron {durability}: {sizes.many_jobs} jobs x {sizes.many_steps} effects",
                ours_many,
                d,
                durability,
                sizes.many_jobs,
                sizes.many_steps,
            )
            for workers in (1, 2):
                results[f"rate-{durability}-{workers}"] = attempt(
                    f"Duron {durability}: {sizes.rate_jobs} jobs, {workers} worker process(es)",
                    ours_rate,
                    d,
                    durability,
                    workers,
                    sizes.rate_jobs,
                    sizes.rate_steps,
                )
        if dbos_py is not None:
            results["dbos-seq"] = attempt(
                f"DBOS: 1 workflow x {sizes.dbos_seq_n} steps",
                dbos_run,
                dbos_py,
                d,
                "seq",
                n=sizes.dbos_seq_n,
            )
            results["dbos-many"] = attempt(
                f"DBOS: {sizes.dbos_many_jobs} workflows x {sizes.many_steps} steps",
                dbos_run,
                dbos_py,
                d,
                "many",
                jobs=sizes.dbos_many_jobs,
                steps=sizes.many_steps,
            )
            results["dbos-rate"] = attempt(
                f"DBOS: {sizes.dbos_rate_jobs} workflows x {sizes.rate_steps} steps",
                dbos_run,
                dbos_py,
                d,
                "many",
                jobs=sizes.dbos_rate_jobs,
                steps=sizes.rate_steps,
            )
            if "error" in results["dbos-seq"]:
                dbos_note += f": cannot run here ({results['dbos-seq']['error']})"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"Duron SQLite store vs {dbos_note}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, load {load:.1f}"
    )
    print("store files on", base)
    print()
    print(
        "µs per effect (DBOS: per step)       Duron flush  Duron fsync     DBOS  DBOS/fsync"
    )
    rows = [
        (f"1 job, {sizes.seq_n} sequential effects", "seq"),
        (f"{sizes.many_jobs} jobs x {sizes.many_steps} effects at once", "many"),
    ]
    verdicts = []
    for label, key in rows:
        theirs = results.get(f"dbos-{key}")
        r = ratio(theirs, results.get(f"{key}-fsync"), "us")
        print(
            f"{label:<36} {us(results.get(f'{key}-flush')):>11}  "
            f"{us(results.get(f'{key}-fsync')):>11}  {us(theirs):>7}  "
            f"{f'{r:.1f}x' if r else '-':>10}"
        )
        if r is not None:
            verdicts.append(
                f"{label}: {r:.1f}x DBOS in durable mode "
                f"({'meets' if r >= TARGET else 'misses'} the {TARGET:.0f}x target)"
            )
    print()
    print(
        f"jobs per second ({sizes.rate_jobs} jobs x {sizes.rate_steps} effects)"
        "     Duron flush  Duron fsync     DBOS"
    )
    dbos_rate = results.get("dbos-rate")
    for workers in (1, 2):
        theirs = rate(dbos_rate) if workers == 1 else "n/a"
        print(
            f"{workers} worker process{'es' if workers > 1 else '':<2}                        "
            f"{rate(results.get(f'rate-flush-{workers}')):>11}  "
            f"{rate(results.get(f'rate-fsync-{workers}')):>11}  {theirs:>7}"
        )
    print()
    for key in ("seq-fsync", "many-fsync", "many-flush"):
        r = results.get(key)
        if r and "commits" in r:
            print(
                f"{key}: {r['effects'] / max(1, r['commits']):.1f} effects per commit "
                f"({r['commits']} commits)"
            )
    if dbos_rate and "error" not in dbos_rate:
        print(
            f"DBOS jobs/s: {dbos_rate['jobs']} workflows in one process "
            "(DBOS has no two-process run here)"
        )
    for v in verdicts:
        print(v)
    for key, r in results.items():
        if "error" in r:
            print(f"{key}: failed: {r['error']}")
    if args.json:
        args.json.write_text(
            json.dumps({"sizes": sizes.__dict__, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
