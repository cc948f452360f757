"""A durable chat agent: tool calls, an interrupt signal and an approval future.

Run it: ``python examples/agent.py``. A scripted user talks to a scripted stand-in
model (no network, no API key): the agent looks up the weather in two cities with
parallel tool calls, asks for approval before booking a table, is interrupted when
it thinks for too long, and says goodbye. Lines starting with ``⚡`` are printed by
effects, i.e. work that really ran: the model being called, a tool running.

The conversation lives in a log (``--log``, default ``agent.jsonl``). Kill the
program at any point and run it again: the conversation is replayed from the log,
without calling the model or the tools again, and carries on where it stopped. Run
it once more after it finished and everything is replayed: no ``⚡`` line at all.
``--new`` starts over.

With ``pip install openai`` and ``OPENAI_API_KEY`` set, ``--model openai`` talks to a
real model (``OPENAI_MODEL``, default ``gpt-4o-mini``); ``--say`` replaces the
scripted user messages, e.g. ``--say "Weather in Oslo?" --say "Thanks!"``.

How the pieces fit:

* the agent reads user messages from ``inbox: duron.Stream[str]``, reports what it
  does on ``outbox: duron.StreamWriter[Event]`` and runs each model call inside
  ``async with interrupt:`` (``interrupt: duron.Signal[str]``);
* the host (:func:`converse`) sends messages, presses "stop" when a model call takes
  longer than ``--stop-after`` seconds and approves bookings. It keeps no state of
  its own: after a restart it learns from the outbox, which shows every event again,
  what the job already received, and answers only what is still open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ValidationError

import duron
from duron.contrib.storage import FileLogStorage

SCRIPT = [
    "What's the weather in Paris and in Tokyo?",
    "Book a table for two at Chez Nous at 20:00.",
    "Write me a very long poem about the sea.",
    "Thanks, that's all!",
]
SYSTEM = (
    "You are a concise assistant. Use the tools for weather and restaurant "
    "bookings; call independent tools in parallel."
)
MAX_STEPS = 5  # model calls per user message
APPROVAL_TIMEOUT = 300.0  # seconds; a durable timer, replayed from the log


# -- messages and events ------------------------------------------------------------------


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None


class Event(BaseModel):
    """What the agent reports to the host (the chat window)."""

    kind: Literal[
        "waiting",  # ready for user message number ``turn``
        "user",  # received user message ``text``
        "thinking",  # model call number ``call`` started
        "thought",  # model call number ``call`` ended
        "tool",  # calling tool ``text``
        "approval",  # asks to approve ``text``; answer future ``approval_id``
        "decision",  # the approval's outcome
        "assistant",  # the reply ``text``
        "interrupted",  # the model call was interrupted
    ]
    turn: int = 0
    call: int = 0
    text: str = ""
    approval_id: str | None = None


# -- tools (effects) ------------------------------------------------------------------------


class WeatherArgs(BaseModel):
    city: str


class BookingArgs(BaseModel):
    restaurant: str
    people: int
    time: str


class _Pace:
    seconds = 0.3  # the stand-in model's and the scripted user's latency


PACE = _Pace()


async def effect_line(text: str) -> None:
    # A moment's latency first: a restarted host redraws the conversation from
    # the log meanwhile, so this line shows up after the message it belongs to.
    await anyio.sleep(0.01)
    print(f"    ⚡ {text}", flush=True)


@duron.effect
async def get_weather(args: WeatherArgs) -> str:
    await effect_line(f"tool get_weather(city={args.city!r})")
    await anyio.sleep(PACE.seconds)
    sky = {"paris": "18°C, cloudy", "tokyo": "24°C, sunny", "oslo": "7°C, rain"}
    return f"{args.city}: {sky.get(args.city.lower(), '20°C, clear')}"


@duron.effect
async def book_table(args: BookingArgs) -> str:
    await effect_line(
        f"tool book_table({args.restaurant!r}, {args.people}, {args.time!r})"
    )
    await anyio.sleep(PACE.seconds)
    code = random.randint(1000, 9999)  # recorded: replay shows the same code
    return (
        f"Booked {args.restaurant} for {args.people} at {args.time}, "
        f"confirmation {code}"
    )


@dataclass(frozen=True)
class Tool:
    fn: Callable[[Any], Awaitable[str]]
    args: type[BaseModel]
    description: str
    needs_approval: bool = False


TOOLS = {
    "get_weather": Tool(get_weather, WeatherArgs, "Current weather in a city."),
    "book_table": Tool(
        book_table, BookingArgs, "Book a restaurant table.", needs_approval=True
    ),
}


# -- the model (an effect) ------------------------------------------------------------------


@duron.effect
async def call_model(model: str, history: list[Message]) -> Message:
    await effect_line(f"calling the model ({model})")
    if model == "scripted":
        return await scripted_model(history)
    return await openai_model(model.removeprefix("openai:"), history)


async def scripted_model(history: list[Message]) -> Message:
    """A stand-in that answers the scripted conversation, and anything else plainly."""
    last = history[-1]
    await anyio.sleep(PACE.seconds)
    if last.role == "tool":
        results = [m.content for m in history if m.role == "tool"][-2:]
        if "Booked" in results[-1]:
            return Message(role="assistant", content=f"Done! {results[-1]}.")
        return Message(role="assistant", content=" / ".join(results))
    text = last.content.lower()
    if "weather" in text:
        cities = [c for c in ("Paris", "Tokyo", "Oslo") if c.lower() in text]
        calls = [
            ToolCall(id=f"call-{c.lower()}", name="get_weather", arguments={"city": c})
            for c in cities or ["Paris"]
        ]
        return Message(role="assistant", tool_calls=calls)
    if "table" in text:
        args = {"restaurant": "Chez Nous", "people": 2, "time": "20:00"}
        call = ToolCall(id="call-booking", name="book_table", arguments=args)
        return Message(role="assistant", tool_calls=[call])
    if "poem" in text:
        await anyio.sleep(3600)  # a very long poem: only an interrupt ends this
    return Message(role="assistant", content="You're welcome. Enjoy your dinner!")


async def openai_model(name: str, history: list[Message]) -> Message:
    from openai import AsyncOpenAI  # optional: pip install openai

    messages: list[dict[str, Any]] = []
    for m in history:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        messages.append(item)
    tools = [
        {
            "type": "function",
            "function": {
                "name": name_,
                "description": tool.description,
                "parameters": tool.args.model_json_schema(),
            },
        }
        for name_, tool in TOOLS.items()
    ]
    response = await AsyncOpenAI().chat.completions.create(
        model=name,
        messages=messages,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
    )
    reply = response.choices[0].message
    return Message(
        role="assistant",
        content=reply.content or "",
        tool_calls=[
            ToolCall(
                id=c.id,
                name=c.function.name,  # type: ignore[union-attr]
                arguments=json.loads(c.function.arguments or "{}"),  # type: ignore[union-attr]
            )
            for c in reply.tool_calls or []
        ],
    )


# -- the durable agent ---------------------------------------------------------------------


async def run_tool(
    ctx: duron.Context,
    call: ToolCall,
    turn: int,
    outbox: duron.StreamWriter[Event],
) -> Message:
    def answer(content: str) -> Message:
        return Message(role="tool", tool_call_id=call.id, content=content)

    tool = TOOLS.get(call.name)
    if tool is None:
        return answer(f"There is no tool named {call.name}.")
    try:
        args = tool.args.model_validate(call.arguments)
    except ValidationError as err:
        return answer(f"Invalid arguments: {err}")
    shown = f"{call.name}({', '.join(f'{k}={v!r}' for k, v in call.arguments.items())})"
    if tool.needs_approval:
        approval_id, approved = await ctx.create_future(
            bool, name=f"approve {call.name}"
        )
        await outbox.send(
            Event(kind="approval", turn=turn, text=shown, approval_id=approval_id)
        )
        try:
            ok = await asyncio.wait_for(approved, APPROVAL_TIMEOUT)
        except asyncio.TimeoutError:
            ok = False
        await outbox.send(
            Event(kind="decision", turn=turn, text="approved" if ok else "declined")
        )
        if not ok:
            return answer("The user did not approve this action.")
    await outbox.send(Event(kind="tool", turn=turn, text=shown))
    return answer(await ctx.run(tool.fn, args))


@duron.durable
async def agent(
    ctx: duron.Context,
    model: str,
    inbox: duron.Stream[str] = duron.Provided,
    interrupt: duron.Signal[str] = duron.Provided,
    outbox: duron.StreamWriter[Event] = duron.Provided,
) -> int:
    history = [Message(role="system", content=SYSTEM)]
    turn = calls = 0
    await outbox.send(Event(kind="waiting", turn=turn))
    async for text in inbox:
        await outbox.send(Event(kind="user", turn=turn, text=text))
        history.append(Message(role="user", content=text))
        for _ in range(MAX_STEPS):
            calls += 1
            try:
                async with interrupt:
                    await outbox.send(Event(kind="thinking", turn=turn, call=calls))
                    reply = await ctx.run(call_model, model, history)
            except duron.SignalInterrupt as stop:
                await outbox.send(Event(kind="thought", turn=turn, call=calls))
                await outbox.send(
                    Event(kind="interrupted", turn=turn, text=f"[{stop.value}]")
                )
                history.append(Message(role="assistant", content="(interrupted)"))
                break
            await outbox.send(Event(kind="thought", turn=turn, call=calls))
            history.append(reply)
            if not reply.tool_calls:
                await outbox.send(
                    Event(kind="assistant", turn=turn, text=reply.content)
                )
                break
            # Independent tool calls run side by side, each an effect of its own.
            history += await asyncio.gather(
                *(run_tool(ctx, call, turn, outbox) for call in reply.tool_calls)
            )
        turn += 1
        await outbox.send(Event(kind="waiting", turn=turn))
    await outbox.close()
    return turn


# -- the host: a chat window driven by a script ---------------------------------------------


def show(event: Event) -> None:
    line = {
        "user": f"you> {event.text}",
        "assistant": f"agent> {event.text}",
        "interrupted": f"agent> {event.text}",
        "approval": f"agent asks to approve: {event.text}",
        "decision": f"  ... {event.text}",
    }.get(event.kind)
    if line is not None:
        print(line, flush=True)


async def converse(log: Path, model: str, script: list[str], stop_after: float) -> int:
    async with agent.invoke(FileLogStorage(log)) as job:
        await job.start(model)
        inbox = await job.open_stream("inbox", "w")
        interrupt = await job.open_stream("interrupt", "w")
        said: set[int] = set()  # user messages the job has received
        ended: set[int] = set()  # model calls that are over

        async def type_message(turn: int) -> None:
            # The scripted user types after a pause. A restarted host has redrawn
            # the whole conversation by then, so `said` tells what was sent before.
            await anyio.sleep(PACE.seconds)
            if turn in said:
                return
            try:
                if turn < len(script):
                    await inbox.send(script[turn])
                else:
                    await inbox.close()
            except duron.UsageError:
                pass  # sent (or closed) before a restart; the job saw it

        async def stop_if_slow(call: int) -> None:
            await anyio.sleep(stop_after)
            if call not in ended:
                print(
                    f"host: no answer after {stop_after:g} s, pressing stop", flush=True
                )
                await interrupt.send("stopped: took too long")

        async def approve(approval_id: str) -> None:
            await anyio.sleep(PACE.seconds)
            print("host: the user clicks approve", flush=True)
            await job.complete_future(approval_id, result=True)

        async with anyio.create_task_group() as tg:
            async for event in await job.open_stream("outbox", "r"):
                show(event)
                if event.kind == "waiting":
                    tg.start_soon(type_message, event.turn)
                elif event.kind == "user":
                    said.add(event.turn)
                elif event.kind == "thinking":
                    tg.start_soon(stop_if_slow, event.call)
                elif event.kind == "thought":
                    ended.add(event.call)
                elif (
                    event.kind == "approval"
                    and event.approval_id is not None
                    and job.is_future_pending(event.approval_id)  # not answered yet
                ):
                    tg.start_soon(approve, event.approval_id)
            tg.cancel_scope.cancel()
        return await job.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=Path("agent.jsonl"))
    parser.add_argument("--new", action="store_true", help="delete the log first")
    parser.add_argument("--model", choices=["scripted", "openai"], default="scripted")
    parser.add_argument("--say", action="append", help="a user message (repeatable)")
    parser.add_argument("--stop-after", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--pace", type=float, default=0.3, metavar="SECONDS")
    opts = parser.parse_args()
    PACE.seconds = opts.pace
    model = "scripted"
    if opts.model == "openai":
        if "OPENAI_API_KEY" not in os.environ:
            sys.exit("--model openai needs OPENAI_API_KEY (and: pip install openai)")
        model = "openai:" + os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    if opts.new:
        opts.log.unlink(missing_ok=True)
    elif opts.log.exists():
        print(f"(resuming the conversation in {opts.log})", flush=True)
    try:
        turns = anyio.run(
            converse, opts.log, model, opts.say or SCRIPT, opts.stop_after
        )
    except duron.JobMismatchError as err:
        sys.exit(f"{err}\n(--new starts a new conversation)")
    print(f"(conversation over after {turns} messages; log: {opts.log})", flush=True)


if __name__ == "__main__":
    main()
