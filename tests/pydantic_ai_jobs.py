"""A durable pydantic-ai agent for the tests: three model steps, parallel tool calls.

Run as a script it is the process ``test_pydantic_ai.py`` SIGKILLs and starts again:
``python pydantic_ai_jobs.py LOG SIDE BLOCK`` runs the job over the file log ``LOG``
(resuming it if it exists). Every model call and tool call appends ``start NAME``
before it works and ``end NAME`` after (fsynced) to ``SIDE``, so the test can tell
what really ran, and how often. ``BLOCK`` names one call (``model-3``, ``tool-b``)
that hangs instead of ending, so a kill lands exactly there; ``-`` blocks nothing.
The host prints each event of the run's stream as one ``event ...`` line, then the
result as ``result ...``.

The model is pydantic-ai's ``FunctionModel``: no network, no key. Step 1 asks for
``lookup(a)`` and ``lookup(b)`` at once, step 2 for ``combine``, step 3 answers.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from pydantic_ai import Agent, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.messages import AgentStreamEvent, ModelMessage
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)

import duron
from duron.contrib.pydantic_ai import DurableAgent, DuronDurability
from duron.contrib.storage import FileLogStorage


class _Run:
    side: Path | None = None
    block: str = "-"


def note(what: str) -> None:
    if _Run.side is None:
        return
    with open(_Run.side, "a") as f:
        f.write(f"{what}\n")
        f.flush()
        os.fsync(f.fileno())


async def call(name: str) -> None:
    note(f"start {name}")
    if _Run.block == name:
        await anyio.sleep(3600)  # hangs until the test kills the process
    await anyio.sleep(0.01)
    note(f"end {name}")


def steps(messages: list[ModelMessage]) -> int:
    return 1 + sum(isinstance(m, ModelResponse) for m in messages)


STEPS: dict[int, list[ToolCallPart | str]] = {
    1: [
        ToolCallPart("lookup", {"key": "a"}, tool_call_id="call-a"),
        ToolCallPart("lookup", {"key": "b"}, tool_call_id="call-b"),
    ],
    2: [ToolCallPart("combine", {"left": 1, "right": 2}, tool_call_id="call-c")],
    3: ["a=1, ", "b=2, ", "sum=3"],
}


async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    step = steps(messages)
    await call(f"model-{step}")
    parts = STEPS[step]
    return ModelResponse(
        parts=[p if isinstance(p, ToolCallPart) else TextPart(p) for p in parts]
    )


async def stream_model(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """The same answers, streamed: the events of the run show the deltas."""
    step = steps(messages)
    await call(f"model-{step}")
    for i, part in enumerate(STEPS[step]):
        if isinstance(part, ToolCallPart):
            yield {
                i: DeltaToolCall(
                    name=part.tool_name,
                    json_args=part.args_as_json_str(),
                    tool_call_id=part.tool_call_id,
                )
            }
        else:
            yield part


agent = Agent(
    FunctionModel(model, stream_function=stream_model),
    name="lookup_agent",
    instructions="Look things up.",
    capabilities=[DuronDurability()],
)


@agent.tool_plain
async def lookup(key: str) -> int:
    """Look a key up."""
    await call(f"tool-{key}")
    return {"a": 1, "b": 2}[key]


@agent.tool_plain
async def combine(left: int, right: int) -> int:
    """Add two numbers."""
    await call("tool-c")
    return left + right


@duron.durable
async def ask(
    ctx: duron.Context,
    question: str,
    events: duron.StreamWriter[AgentStreamEvent] = duron.Provided,
) -> str:
    result = await DurableAgent(agent).run(ctx, question, events=events)
    await events.close()
    return result.output


def describe(event: AgentStreamEvent) -> str:
    """One line per event, the same for an event and its replay."""
    part = getattr(event, "part", None) or getattr(event, "result", None)
    detail = getattr(part, "tool_name", None) or getattr(part, "content", "")
    return f"{event.event_kind} {detail}".rstrip()


async def main(log: Path) -> None:
    async with ask.invoke(FileLogStorage(log)) as job:
        await job.start("What is a + b?")
        async for event in await job.open_stream("events", "r"):
            print("event", describe(event), flush=True)
        print("result", await job.wait(), flush=True)


if __name__ == "__main__":
    _Run.side = Path(sys.argv[2])
    _Run.block = sys.argv[3]
    asyncio.run(main(Path(sys.argv[1])))
