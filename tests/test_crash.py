"""Crash test: a real process SIGKILLed at random moments resumes without re-doing work.

``crash_worker.py`` runs a 200-effect job over a file log (in flush or fsync mode,
drawn per run: a killed process loses nothing the OS was handed); each effect
appends its key to a side file (fsynced) just before it returns. The test kills the worker at random
moments (seeded), notes after each kill which effects the log holds a ``done`` entry
for, and starts it again until the job finishes. An effect may run again only if its
``done`` entry had not reached the log when the process died.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.timeout(60)

WORKER = Path(__file__).with_name("crash_worker.py")
N = 200  # effects in the worker's job, keys 0..199; each returns key * key
WIDEST = 4  # the worker's widest gather: at most this many effects run at once
KILLS = 6


@dataclass
class Kill:
    side_lines: int  # lines in effects.log when the process died
    done: set[int]  # effect keys with a ``done`` entry in the log at that moment


def side_keys(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines()]


def done_keys(log: Path) -> set[int]:
    """Keys of the effects whose ``done`` entry the log holds (a torn tail is not)."""
    if not log.exists():
        return set()
    data = log.read_bytes()
    committed = data[: data.rfind(b"\n") + 1]
    keys: dict[int, int] = {}
    done: set[int] = set()
    for line in committed.splitlines():
        entry = orjson.loads(line)
        if entry["type"] in ("start", "done") and "inputs" in entry:
            keys[entry["id"]] = entry["inputs"]["key"]
        if entry["type"] == "done":
            done.add(entry["id"])
    return {keys[i] for i in done}


def wait_for_progress(proc: subprocess.Popen[bytes], side: Path, lines: int) -> None:
    """Wait until this run has finished an effect (or exited): a kill then lands mid-job."""
    deadline = time.monotonic() + 15
    while len(side_keys(side)) <= lines and proc.poll() is None:
        assert time.monotonic() < deadline, "the worker made no progress in 15 s"
        time.sleep(0.005)


def test_sigkilled_job_resumes_and_never_reruns_a_logged_effect(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261124)
    side = tmp_path / "effects.log"
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills: list[Kill] = []
    while True:
        backend = rng.choice(["asyncio", "trio"])
        durability = rng.choice(["flush", "fsync"])
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path), backend, durability],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        if len(kills) < KILLS:
            wait_for_progress(proc, side, len(side_keys(side)))
            time.sleep(rng.uniform(0.0, 0.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills.append(Kill(len(side_keys(side)), done_keys(log)))
                continue
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        break

    assert json.loads(out) == {"result": sum(key * key for key in range(N))}
    assert len(kills) >= 3, "the worker finished before most kills could land"
    # Kills landed mid-job: with work logged and work left to do.
    assert any(0 < len(k.done) < N for k in kills), [len(k.done) for k in kills]

    ran = side_keys(side)
    assert sorted(set(ran)) == list(range(N))  # every effect ran
    assert done_keys(log) == set(range(N))
    # Split the side file by run: run r wrote lines [bounds[r], bounds[r + 1]).
    bounds = [0, *(k.side_lines for k in kills), len(ran)]
    for r in range(len(bounds) - 1):
        run = ran[bounds[r] : bounds[r + 1]]
        assert len(run) == len(set(run)), f"run {r} ran an effect twice: {run}"
        if r > 0:
            logged = kills[r - 1].done
            again = sorted(set(run) & logged)
            assert again == [], (
                f"run {r} re-ran effects whose done entry was logged before the "
                f"kill that ended run {r - 1}: {again}"
            )
    # Only effects in flight at a kill (at most one gather's worth) ran again.
    reran = len(ran) - N
    assert reran <= WIDEST * len(kills), f"{reran} re-runs for {len(kills)} kills"
    # One outcome per op in the log, whatever ran twice.
    done_ids = [
        entry["id"]
        for entry in map(orjson.loads, log.read_bytes().splitlines())
        if entry["type"] == "done"
    ]
    assert sorted(done_ids) == list(range(N))

    # Once more on the finished log: the same result, and nothing runs.
    replay = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), "asyncio", "flush"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr.decode()
    assert replay.stdout == out
    assert side_keys(side) == ran
