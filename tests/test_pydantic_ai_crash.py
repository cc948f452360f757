"""A durable pydantic-ai run SIGKILLed mid-way resumes from the call that was cut off.

``pydantic_ai_jobs.py`` runs a three-step agent (parallel tool calls in step 1) in a
real subprocess; one call hangs on the first run, the test kills the process there
with SIGKILL and starts it again. The side file says what really ran: every model
step and every tool ran once in all, except the call the kill cut off, which ran
again (its result had not reached the log). The second run's event stream shows
the whole run, as an uninterrupted run's does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.timeout(90)

JOBS = Path(__file__).with_name("pydantic_ai_jobs.py")
CALLS = ["model-1", "tool-a", "tool-b", "model-2", "tool-c", "model-3"]


def run(log: Path, side: Path, block: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(JOBS), str(log), str(side), block],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def side_lines(side: Path) -> list[str]:
    return side.read_text().splitlines() if side.exists() else []


def done_names(log: Path) -> list[str]:
    names: dict[int, str] = {}
    done: list[str] = []
    for line in log.read_bytes().splitlines():
        entry = orjson.loads(line)
        if entry["type"] in ("start", "done") and "name" in entry:
            names[entry["id"]] = entry["name"]
        if entry["type"] == "done":
            done.append(names[entry["id"]])
    return done


def wait_until(check: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def finish(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.splitlines()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What the host sees of a run that nothing interrupts."""
    tmp = tmp_path_factory.mktemp("reference")
    out = finish(run(tmp / "log.jsonl", tmp / "side.txt", "-"))
    assert side_lines(tmp / "side.txt") == [
        *("start model-1", "end model-1"),
        *("start tool-a", "start tool-b", "end tool-a", "end tool-b"),
        *("start model-2", "end model-2", "start tool-c", "end tool-c"),
        *("start model-3", "end model-3"),
    ]
    assert out[-1] == "result a=1, b=2, sum=3"
    return out


@pytest.mark.parametrize(
    ("cut", "logged_before"),
    [
        # Killed while the last model step runs: every tool and both earlier
        # steps are in the log.
        (
            "model-3",
            [
                *("lookup_agent.model.request_stream", "lookup_agent.tool.lookup"),
                *("lookup_agent.tool.lookup", "lookup_agent.model.request_stream"),
                "lookup_agent.tool.combine",
            ],
        ),
        # Killed while one of two parallel tool calls runs, the other one logged.
        ("tool-b", ["lookup_agent.model.request_stream", "lookup_agent.tool.lookup"]),
    ],
)
def test_killed_run_resumes_from_the_call_cut_off(
    tmp_path: Path, uninterrupted: list[str], cut: str, logged_before: list[str]
) -> None:
    log, side = tmp_path / "log.jsonl", tmp_path / "side.txt"
    first = run(log, side, cut)
    wait_until(lambda: f"start {cut}" in side_lines(side), f"{cut} to start")
    wait_until(lambda: len(done_names(log)) == len(logged_before), "the log")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    assert sorted(done_names(log)) == sorted(logged_before)
    before = side_lines(side)

    second = finish(run(log, side, "-"))

    again = side_lines(side)[len(before) :]
    # Only the call that was cut off runs again, then the rest of the run.
    assert again[:2] == [f"start {cut}", f"end {cut}"]
    rest = CALLS[CALLS.index(cut) + 1 :]
    assert [line for line in again[2:] if line.startswith("start")] == [
        f"start {name}" for name in rest
    ]
    starts = [
        line.removeprefix("start ") for line in side_lines(side) if "start" in line
    ]
    assert sorted(starts) == sorted([*CALLS, cut])  # once each, the cut one twice
    ends = [line.removeprefix("end ") for line in side_lines(side) if "end" in line]
    assert sorted(ends) == sorted(CALLS)
    # The restarted host sees the whole run's events, replayed then live.
    assert second == uninterrupted

    # Run once more: the finished job replays without calling anything.
    third = finish(run(log, side, "-"))
    assert side_lines(side)[len(before) + len(again) :] == []
    assert third == uninterrupted
