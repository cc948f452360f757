"""``duron verify`` over a durable pydantic-ai agent's log.

A log written by ``pydantic_ai_jobs.ask`` replays against the same code, and is
reported incompatible, with both calls named, when the agent's tool list or its
instructions changed: the model request records the tools offered and the
instructions, so the first request already differs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import AgentStreamEvent

import duron
from duron.contrib.pydantic_ai import DurableAgent, DuronDurability
from duron.testing import IncompatibleLogError, verify

sys.path.insert(0, str(Path(__file__).parent))
import pydantic_ai_jobs as jobs


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("golden")
    log = tmp / "ask.jsonl"
    subprocess.run(
        [sys.executable, str(jobs.__file__), str(log), str(tmp / "side.txt"), "-"],
        check=True,
        capture_output=True,
    )
    return log


def variant(
    instructions: str = "Look things up.",
) -> tuple[duron.DurableFn[..., str], Agent[None, str]]:
    """``jobs.ask`` and its agent as a later version of the code defines them."""
    agent = Agent(
        jobs.agent.model,
        name="lookup_agent",
        instructions=instructions,
        capabilities=[DuronDurability()],
    )
    agent.tool_plain(jobs.lookup)
    agent.tool_plain(jobs.combine)

    @duron.durable(name="ask")
    async def ask(
        ctx: duron.Context,
        question: str,
        events: duron.StreamWriter[AgentStreamEvent] = duron.Provided,
    ) -> str:
        result = await DurableAgent(agent).run(ctx, question, events=events)
        await events.close()
        return result.output

    return ask, agent


def test_the_same_code_replays_the_agents_log(golden: Path) -> None:
    report = verify(jobs.ask, golden)
    assert report.ok
    assert report.finished


def test_a_new_tool_is_caught(golden: Path) -> None:
    ask, agent = variant()

    @agent.tool_plain
    def forecast(city: str) -> str:
        """Tomorrow's weather."""
        return "rain"

    with pytest.raises(IncompatibleLogError) as err:
        verify(ask, golden)
    report = err.value.report
    assert (report.reason, report.position) == ("diverged", 0)
    assert report.recorded is not None
    assert report.requested is not None
    assert report.recorded.startswith(
        "lookup_agent.model.request_stream(tools=['lookup', 'combine'], "
        "instructions='Look things up.', messages="
    )
    assert report.requested.startswith(
        "lookup_agent.model.request_stream(tools=['lookup', 'combine', 'forecast'], "
        "instructions='Look things up.', messages="
    )


def test_changed_instructions_are_caught(golden: Path) -> None:
    ask, _ = variant(instructions="Look things up, politely.")
    with pytest.raises(IncompatibleLogError) as err:
        verify(ask, golden)
    report = err.value.report
    assert (report.reason, report.position) == ("diverged", 0)
    assert report.requested is not None
    assert report.requested.startswith(
        "lookup_agent.model.request_stream(tools=['lookup', 'combine'], "
        "instructions='Look things up, politely.', messages="
    )
