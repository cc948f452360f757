"""What the job-store benchmark drivers share: running a measurement in a fresh
interpreter, and timing a pool of worker processes that start together.

``bench_sqlite.py`` and ``bench_postgres.py`` import it (their directory is on
``sys.path`` when they run as scripts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def say(msg: str) -> None:
    print(f"-- {msg}", file=sys.stderr, flush=True)


def python() -> str:
    """This checkout's interpreter (its ``.venv``), else the one running now."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    raise ValueError(f"no result in output: {text[-500:]!r}")


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd``; the JSON object on its last line, or its error's last lines."""
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise RuntimeError(" / ".join(tail) or f"exit {r.returncode}")
    return last_json(r.stdout)


def run_workers(
    cmds: list[list[str]], go: Path, timeout: float = 600
) -> tuple[float, list[dict[str, Any]]]:
    """Start a worker process per command, wait until each printed ``ready``,
    create ``go`` and collect each one's JSON: the wall-clock time of the go,
    and the outputs."""
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in cmds
    ]
    try:
        for p in procs:  # every worker imported and opened the store
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                err = p.stderr.read() if p.stderr else ""
                raise RuntimeError(f"worker did not start: {line!r} {err}")
        start = time.time()
        go.touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(
                    err.strip().splitlines()[-1] if err.strip() else "worker failed"
                )
            outs.append(last_json(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return start, outs
