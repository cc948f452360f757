"""Crash test for live input: SIGKILL a hosted session at random moments and resume it.

``live_input_worker.py`` runs a session fed by a scripted host: messages on an
injected stream, a signal that interrupts some turns, approvals through durable
futures, durable deadlines, tool effects in parallel. The test kills the worker at
random moments (seeded), restarts it until the session ends, then runs it once more
as a pure replay. Each run must continue where the log ended; every run's host must
see the same events from the start; the replay must run no effect, write nothing and
end with the same result.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from live_input_worker import TURNS, expected_outcomes

pytestmark = pytest.mark.timeout(90)

WORKER = Path(__file__).with_name("live_input_worker.py")
KILLS = 5


def committed_entries(log: Path) -> int:
    if not log.exists():
        return 0
    return log.read_bytes().count(b"\n")


def side_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def parse(out: bytes) -> tuple[list[dict[str, Any]], Any]:
    """The events a run's host read, in order, and the job's result (if it ended)."""
    events: list[dict[str, Any]] = []
    result: Any = None
    for line in out.decode().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by the kill
        if "event" in record:
            events.append(record["event"])
        else:
            result = record["result"]
    return events, result


def start(tmp_path: Path, backend: str, seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp_path), backend, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_progress(proc: subprocess.Popen[bytes], log: Path, entries: int) -> None:
    """Wait until this run wrote to the log (or exited): a kill then lands mid-job."""
    deadline = time.monotonic() + 20
    while committed_entries(log) <= entries and proc.poll() is None:
        assert time.monotonic() < deadline, "the worker made no progress in 20 s"
        time.sleep(0.005)


def test_killed_session_resumes_and_replays_its_live_input(tmp_path: Path) -> None:
    # LIVE_INPUT_CRASH_SEED explores other kill schedules by hand.
    rng = random.Random(int(os.environ.get("LIVE_INPUT_CRASH_SEED", "20261124")))
    log = tmp_path / "log.jsonl"
    side = tmp_path / "effects.log"
    runs: list[list[dict[str, Any]]] = []  # the events each run's host read
    sizes: list[int] = []  # committed entries after each killed run
    out = b""
    while True:
        before = committed_entries(log)
        proc = start(tmp_path, rng.choice(["asyncio", "trio"]), rng.randrange(1000))
        if len(sizes) < KILLS:
            wait_for_progress(proc, log, before)
            time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                out, _ = proc.communicate()
                runs.append(parse(out)[0])
                sizes.append(committed_entries(log))
                # Each resumed run carried the job on from where the log ended.
                assert sizes[-1] > before
                continue
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        break
    final_events, result = parse(out)
    assert len(sizes) >= 3, "the worker finished before most kills could land"

    assert result["outcomes"] == expected_outcomes()
    messages = [t for t in result["trace"] if t.startswith("message ")]
    assert messages == [f"message {k}" for k in range(TURNS)]
    for k in range(0, TURNS, 2):  # turns that are not interrupted run their tools
        assert f"tools {k}" in result["trace"]

    # Every run's host saw the job's events from the start, as the final run did.
    assert final_events[0] == {"kind": "got", "turn": 0, "future": None}
    for seen in runs:
        assert seen == final_events[: len(seen)]

    # A pure replay: same events, same result, no effect run, nothing written.
    log_bytes, effects = log.read_bytes(), side_lines(side)
    proc = start(tmp_path, "asyncio", 0)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert parse(out) == (final_events, result)
    assert log.read_bytes() == log_bytes
    assert side_lines(side) == effects
