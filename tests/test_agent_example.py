"""``examples/agent.py`` as a user runs it: twice over one log, and killed mid-way.

The scripted mode needs no network. Lines starting with ``⚡`` are printed by effects
(a model call, a tool), so counting them tells what really ran in each process.
The pacing options make the scripted user and model quick.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

AGENT = Path(__file__).parent.parent / "examples" / "agent.py"
FAST = ["--pace", "0.02", "--stop-after", "0.5"]
MODEL_CALL = "    ⚡ calling the model (scripted)"

CONVERSATION = [
    "you> What's the weather in Paris and in Tokyo?",
    "agent> Paris: 18°C, cloudy / Tokyo: 24°C, sunny",
    "you> Book a table for two at Chez Nous at 20:00.",
    "agent asks to approve: book_table(restaurant='Chez Nous', people=2, time='20:00')",
    "  ... approved",
    "agent> Done! Booked Chez Nous for 2 at 20:00, confirmation NNNN.",
    "you> Write me a very long poem about the sea.",
    "agent> [stopped: took too long]",
    "you> Thanks, that's all!",
    "agent> You're welcome. Enjoy your dinner!",
]


def command(log: Path) -> list[str]:
    return [sys.executable, str(AGENT), "--log", str(log), *FAST]


def run_agent(log: Path) -> list[str]:
    proc = subprocess.run(
        command(log),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def conversation(lines: list[str]) -> list[str]:
    """What the chat window shows, the booking code masked (it is random per job)."""
    shown = [
        line
        for line in lines
        if line.startswith(("you> ", "agent> ", "agent asks", "  ... "))
    ]
    return [re.sub(r"confirmation \d{4}", "confirmation NNNN", s) for s in shown]


def test_second_run_replays_the_conversation_without_calling_the_model(
    tmp_path: Path,
) -> None:
    log = tmp_path / "chat.jsonl"
    first = run_agent(log)
    assert conversation(first) == CONVERSATION
    assert first.count(MODEL_CALL) == 6
    assert sum("⚡ tool " in line for line in first) == 3
    assert "host: no answer after 0.5 s, pressing stop" in first
    assert first[-1] == f"(conversation over after 4 messages; log: {log})"

    second = run_agent(log)
    assert second[0] == f"(resuming the conversation in {log})"
    assert [line for line in second if "⚡" in line] == []
    # The same conversation, booking code included: it comes from the log.
    assert [s for s in second if s in first] == second[1:]
    assert conversation(second) == conversation(first)
    assert not any(line.startswith("host: ") for line in second)


def test_killed_conversation_resumes_without_calling_the_model_again(
    tmp_path: Path,
) -> None:
    log = tmp_path / "chat.jsonl"
    proc = subprocess.Popen(
        command(log),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert proc.stdout is not None
    before: list[str] = []
    for line in proc.stdout:
        before.append(line.rstrip("\n"))
        if line.startswith("you> Write me a very long poem"):
            proc.send_signal(signal.SIGKILL)  # while the model "writes the poem"
            break
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert conversation(before) == CONVERSATION[:7]
    assert before.count(MODEL_CALL) >= 4  # the poem's call may have printed too

    after = run_agent(log)
    assert conversation(after) == CONVERSATION
    # The conversation up to the kill is redrawn from the log; only the call in
    # flight at the kill (the poem) and the last answer reach the model.
    assert after.count(MODEL_CALL) == 2
    redrawn = conversation(after)[: len(conversation(before))]
    assert redrawn == conversation(before)
    booking = next(s for s in before if "confirmation" in s)
    assert booking in after  # the booking tool did not run again
