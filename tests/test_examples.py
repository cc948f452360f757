"""Every program in ``examples/`` runs as documented, each in a fresh process.

An example joins by naming a line its output must contain in ``EXPECTED``; one that
cannot run here (a server, a package the dev install lacks) says why in ``NOT_RUN``
and is not run. An example listed in neither fails here, so that none goes untested
by accident. The quickstart has a test of its own: it runs twice over one log.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

QUICKSTART = "hello_world.py"

EXPECTED: dict[str, str] = {
    "effects.py": "  not reserved (only 2 apples left); price 13.50, check 28",
    "payloads.py": "  Ada: 2 lines, 1.95 PAID",
    "streaming_effect.py": "  progress: [300, 600, 900, 1000]",
    "concurrency.py": "replay returned the same report",
    # The offset moves with the length of the job entry's timestamp.
    "nondeterminism.py": (
        "the log recorded charge_card(order=42) but the code now asks for "
        "send_email(order=42). The durable function no longer replays this log"
    ),
    "custom_codec.py": "  buy lamp at Money(12.50 EUR)",
    "custom_storage.py": "the store holds 4 entries for job-1",
    # Killed with SIGKILL mid-charge and resumed (tests/test_retry.py checks more).
    "payments.py": "  card charged 1 time(s) for order 42",
    # Continue as new: the polling loop's logs stay small however long it runs.
    "polling.py": "every log stayed under 100 entries",
    "pydantic_ai_agent.py": (
        "agent> Paris: 18°C, cloudy, Tokyo: 24°C, sunny. Booked Chez Nous for 2 at 20:00."
    ),
}

NOT_RUN: dict[str, str] = {
    "agent.py": "a paced conversation; tests/test_agent_example.py runs it quicker, "
    "twice over one log and killed mid-way",
    "service.py": "an HTTP server that runs until stopped; needs starlette and uvicorn",
}

TIMEOUT = 60


def run_example(name: str, cwd: Path) -> str:
    """Run one example with this interpreter; returns its stdout."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in EXAMPLES.glob("*.py")
        if p.name != QUICKSTART and p.name not in NOT_RUN
    ),
)
def test_example_runs(name: str, tmp_path: Path) -> None:
    assert name in EXPECTED, (
        f"examples/{name} is not covered: add a line its output must contain to "
        "EXPECTED in tests/test_examples.py (or say in NOT_RUN why it cannot run)"
    )
    out = run_example(name, tmp_path)
    assert EXPECTED[name] in out, out


def test_every_listed_example_exists() -> None:
    present = {p.name for p in EXAMPLES.glob("*.py")}
    assert {QUICKSTART, *EXPECTED, *NOT_RUN} <= present


def test_quickstart_second_run_replays_without_running_effects(tmp_path: Path) -> None:
    first = run_example(QUICKSTART, tmp_path).splitlines()
    assert sorted(first[:3]) == [
        "⚡ Generating lucky number...",
        "⚡ Greeting...",
        "⚡ Preparing to greet...",
    ]
    assert len(first) == 4
    assert re.fullmatch(r"Hello, Alice! Your lucky number is \d+\.", first[3])
    assert (tmp_path / "log.jsonl").exists()

    second = run_example(QUICKSTART, tmp_path).splitlines()
    assert second == [first[3]], "the second run ran an effect again"
