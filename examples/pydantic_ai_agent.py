"""A durable pydantic-ai agent: parallel tool calls, an approval, streamed events.

Run it: ``python examples/pydantic_ai_agent.py``. Offline by default: the model is a
scripted stand-in (pydantic-ai's ``FunctionModel``), no network, no API key. It looks
up the weather in two cities with parallel tool calls, then asks to book a table, a
tool that needs approval; the host (this script) approves it. Lines starting with
``⚡`` are printed by work that really ran: the model being called, a tool running.

The run lives in a log (``--log``, default ``pydantic_ai_agent.jsonl``). Kill the
program at any point (Ctrl-C) and run it again: the conversation is replayed from
the log without calling the model or the tools again, and goes on from the call
that was cut off. Run it once more after it finished: no ``⚡`` line at all.
``--new`` starts over.

With ``pip install 'pydantic-ai-slim[openai]'`` and ``OPENAI_API_KEY`` set, the agent
talks to a real model (``--model openai:gpt-4o-mini``, the default then).

Needs ``pip install 'duron[pydantic-ai]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from pydantic_ai import (
    Agent,
    DeferredToolRequests,
    ModelResponse,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.messages import AgentStreamEvent, ModelMessage, ToolReturnPart
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)

import duron
from duron.contrib.pydantic_ai import ApprovalRequested, DurableAgent, DuronDurability
from duron.contrib.storage import FileLogStorage

PACE = 0.3  # seconds the stand-in model and the tools take


def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A stand-in model for the scripted conversation."""
    print("    ⚡ calling the model", flush=True)
    results = [
        p.content for m in messages for p in m.parts if isinstance(p, ToolReturnPart)
    ]
    if not results:
        return ModelResponse(
            parts=[
                ToolCallPart("get_weather", {"city": "Paris"}, tool_call_id="w1"),
                ToolCallPart("get_weather", {"city": "Tokyo"}, tool_call_id="w2"),
            ]
        )
    if len(results) == 2:
        args = {"restaurant": "Chez Nous", "people": 2, "time": "20:00"}
        return ModelResponse(
            parts=[ToolCallPart("book_table", args, tool_call_id="b1")]
        )
    return ModelResponse(parts=[TextPart(f"{results[0]}, {results[1]}. {results[2]}.")])


async def scripted_stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """The same answers, streamed (an agent run with an event stream streams)."""
    for i, part in enumerate(scripted(messages, info).parts):
        await anyio.sleep(PACE)
        if isinstance(part, ToolCallPart):
            call = DeltaToolCall(
                name=part.tool_name,
                json_args=part.args_as_json_str(),
                tool_call_id=part.tool_call_id,
            )
            yield {i: call}
        elif isinstance(part, TextPart):
            yield part.content


def make_agent(model: str) -> Agent[None, str | DeferredToolRequests]:
    agent: Agent[None, str | DeferredToolRequests] = Agent(
        FunctionModel(scripted, stream_function=scripted_stream)
        if model == "scripted"
        else model,
        name="concierge",
        instructions="Use the tools; call independent tools in parallel.",
        output_type=[str, DeferredToolRequests],
        capabilities=[DuronDurability()],
    )

    @agent.tool_plain
    async def get_weather(city: str) -> str:
        """Current weather in a city."""
        print(f"    ⚡ tool get_weather({city!r})", flush=True)
        await anyio.sleep(PACE)
        return f"{city}: {'18°C, cloudy' if city == 'Paris' else '24°C, sunny'}"

    @agent.tool_plain(requires_approval=True)
    async def book_table(restaurant: str, people: int, time: str) -> str:
        """Book a restaurant table (the user approves first)."""
        print(f"    ⚡ tool book_table({restaurant!r}, {people}, {time!r})", flush=True)
        await anyio.sleep(PACE)
        return f"Booked {restaurant} for {people} at {time}"

    return agent


AGENTS: dict[str, Agent[None, str | DeferredToolRequests]] = {}


@duron.durable
async def concierge(
    ctx: duron.Context,
    model: str,
    request: str,
    events: duron.StreamWriter[AgentStreamEvent] = duron.Provided,
) -> str:
    agent = AGENTS.setdefault(model, make_agent(model))
    result = await DurableAgent(agent).run(ctx, request, events=events)
    await events.close()
    assert isinstance(result.output, str)
    return result.output


async def main(log: Path, model: str) -> None:
    async with concierge.invoke(FileLogStorage(log)) as job:
        await job.start(model, "Weather in Paris and Tokyo, then book Chez Nous.")
        async for event in await job.open_stream("events", "r"):
            if event.event_kind == "function_tool_call":
                print(
                    f"agent calls {event.part.tool_name}({event.part.args_as_dict()})"
                )
            elif isinstance(event, ApprovalRequested):
                print(f"agent asks to approve {event.tool_name}({event.args})")
                if job.is_future_pending(event.future_id):
                    await anyio.sleep(PACE)
                    print("host: approved", flush=True)
                    await job.complete_future(event.future_id, result=True)
        print(f"agent> {await job.wait()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=Path("pydantic_ai_agent.jsonl"))
    parser.add_argument("--new", action="store_true", help="start a new conversation")
    default = "openai:gpt-4o-mini" if os.environ.get("OPENAI_API_KEY") else "scripted"
    parser.add_argument("--model", default=default)
    parser.add_argument("--pace", type=float, default=PACE)
    args = parser.parse_args()
    PACE = args.pace
    if args.new:
        args.log.unlink(missing_ok=True)
    elif args.log.exists():
        print(f"(resuming the conversation in {args.log})")
    asyncio.run(main(args.log, args.model))
