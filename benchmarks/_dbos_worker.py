"""The same workloads on DBOS (SQLite system database), run by ``bench_sqlite.py``
with the interpreter of ``benchmarks/.venv-dbos``.

* ``seq``: one workflow of N sequential steps: time per step.
* ``many``: J workflows of S sequential steps each, started at once: time per step.

DBOS keeps its SQLite defaults (rollback journal, ``synchronous=FULL``): it has no
mode that skips the sync. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dbos import DBOS


def expected(n: int) -> int:
    return n * (n + 1) // 2


async def run(args: argparse.Namespace) -> dict[str, Any]:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{args.db}{suffix}")
    DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{args.db}"})

    @DBOS.step()
    async def step(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    async def seq_flow(n: int) -> int:
        total = 0
        for i in range(n):
            total += await step(i)
        return total

    DBOS.launch()
    try:
        assert await seq_flow(5) == expected(5)  # warm up
        t0 = time.perf_counter()
        if args.mode == "seq":
            assert await seq_flow(args.n) == expected(args.n)
            effects = args.n
        else:
            handles = [
                await DBOS.start_workflow_async(seq_flow, args.steps)
                for _ in range(args.jobs)
            ]
            for h in handles:
                assert await h.get_result() == expected(args.steps)
            effects = args.jobs * args.steps
        elapsed = time.perf_counter() - t0
    finally:
        DBOS.destroy()
    return {"seconds": elapsed, "effects": effects, "jobs": args.jobs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["seq", "many"])
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    logging.disable(logging.INFO)
    out = asyncio.run(run(args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
