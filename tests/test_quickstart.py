"""The quickstart (``examples/hello_world.py``) run as a user runs it: as a script.

Each run is a fresh interpreter in a temporary directory, where the example keeps its
``log.jsonl``. The first run does the work, the second replays it; a run killed once
the lucky number is logged resumes without drawing a new one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello_world.py"
RESULT = re.compile(r"^Hello, Alice! Your lucky number is (\d+)\.$", re.MULTILINE)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def run_example(cwd: Path) -> tuple[str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode(), elapsed


def lucky_number(stdout: str) -> int:
    match = RESULT.search(stdout)
    assert match is not None, stdout
    return int(match.group(1))


def logged_entries(log: Path) -> list[dict[str, object]]:
    data = log.read_bytes() if log.exists() else b""
    committed = data[: data.rfind(b"\n") + 1]
    return [orjson.loads(line) for line in committed.splitlines()]


def logged_lucky_number(log: Path) -> int | None:
    """The lucky number's ``done`` entry result, once it is in the log."""
    names: dict[object, object] = {}
    for entry in logged_entries(log):
        if "name" in entry:
            names[entry["id"]] = entry["name"]
        if entry["type"] == "done" and names.get(entry["id"]) == (
            "generate_lucky_number"
        ):
            result = entry["result"]
            assert isinstance(result, int)
            return result
    return None


def test_second_run_replays_the_first(tmp_path: Path) -> None:
    first, _ = run_example(tmp_path)
    number = lucky_number(first)
    assert 1 <= number <= 100
    assert first.splitlines() == [
        "⚡ Preparing to greet...",
        "⚡ Generating lucky number...",
        "⚡ Greeting...",
        f"Hello, Alice! Your lucky number is {number}.",
    ]
    assert logged_lucky_number(tmp_path / "log.jsonl") == number

    second, elapsed = run_example(tmp_path)
    assert second == f"Hello, Alice! Your lucky number is {number}.\n"
    # The greeting effect alone sleeps 2 s: a replay that finishes sooner ran no effect.
    assert elapsed < 2.0


def test_run_killed_half_way_resumes_with_the_logged_lucky_number(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The lucky number is logged after ~1 s, the greeting after ~2 s: kill in between,
    # as soon as the log holds the number.
    deadline = time.monotonic() + 20
    while (number := logged_lucky_number(log)) is None:
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the lucky number was never logged"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    killed = out.decode()
    assert "⚡ Generating lucky number..." in killed
    assert "Hello, Alice!" not in killed  # it died before the greeting was logged
    assert all(entry["type"] != "end" for entry in logged_entries(log))

    resumed, _ = run_example(tmp_path)
    assert "⚡ Generating lucky number..." not in resumed
    # The greeting was in flight at the kill: it runs again, and only it.
    assert [line for line in resumed.splitlines() if line.startswith("⚡")] == [
        "⚡ Preparing to greet...",
        "⚡ Greeting...",
    ]
    assert lucky_number(resumed) == number
