"""The job ``test_live_input_crash.py`` runs in a subprocess and SIGKILLs at random moments.

Usage: ``python live_input_worker.py DIR BACKEND SEED`` (BACKEND: ``asyncio`` or
``trio``; SEED varies the host's timing).

A chat-like session over the file log ``DIR/log.jsonl``: the host sends numbered
messages on the ``inbox`` stream; each turn runs three tool effects side by side and,
depending on the turn, is interrupted by the ``stop`` signal, waits for the host's
approval (a durable future) or gives up on a future after a durable deadline. Every
tool effect appends ``turn.tool`` to ``DIR/effects.log`` (fsynced) before returning.

The host is scripted and keeps no state of its own between runs, as a restarted
process would not: it learns what the job already received from the ``events``
output stream, which shows every value again after a restart, and it guards the
signal and the approvals with ``job.is_future_pending``, which is exact once replay
is over. A message may still be sent twice across a kill (sent, logged, then the
process died before the host saw the job's receipt); the durable code drops
repeats by sequence number, as any consumer of at-least-once input does.

The worker prints one JSON line per event the host reads (``{"event": ...}``) and,
when the job ends, ``{"result": ...}``.

This file is not a test module (pytest collects ``test_*.py`` only); it is run by path.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

import duron
from duron.contrib.storage import FileLogStorage

TURNS = 20
TOOLS = 3


class Msg(BaseModel):
    seq: int
    text: str


class Event(BaseModel):
    kind: str  # got, interrupt-me, approve-me, ignore-me
    turn: int
    future: str | None = None


class _Side:
    path: Path | None = None


@duron.effect
async def tool(turn: int, index: int) -> int:
    await anyio.sleep(0.004 + 0.003 * ((turn + index) % 4))
    assert _Side.path is not None
    with open(_Side.path, "a") as f:
        f.write(f"{turn}.{index}\n")
        f.flush()
        os.fsync(f.fileno())
    return turn * 10 + index


async def one_turn(
    ctx: duron.Context,
    k: int,
    stop: duron.Signal[str],
    events: duron.StreamWriter[Event],
    trace: list[str],
) -> str:
    async def tools() -> int:
        results = await asyncio.gather(*(ctx.run(tool, k, i) for i in range(TOOLS)))
        trace.append(f"tools {k}")
        return sum(results)

    kind = k % 4
    if kind == 0:
        return f"tools {await tools()}"
    if kind == 1:  # the host interrupts it
        try:
            async with stop:
                hold_id, hold = await ctx.create_future(int, name=f"hold {k}")
                await events.send(Event(kind="interrupt-me", turn=k, future=hold_id))
                await asyncio.gather(tools(), hold)
        except duron.SignalInterrupt as interrupt:
            return f"interrupted: {interrupt.value}"
        return "not interrupted"
    if kind == 2:  # the host approves it
        approval_id, approval = await ctx.create_future(int, name=f"approval {k}")
        await events.send(Event(kind="approve-me", turn=k, future=approval_id))
        total, approved = await asyncio.gather(tools(), approval)
        return f"approved {approved}, tools {total}"
    ignored_id, ignored = await ctx.create_future(int, name=f"ignored {k}")
    await events.send(Event(kind="ignore-me", turn=k, future=ignored_id))
    try:
        await asyncio.wait_for(ignored, 0.02)
    except asyncio.TimeoutError:
        return "deadline passed"
    return "answered"


@duron.durable
async def session(
    ctx: duron.Context,
    turns: int,
    inbox: duron.Stream[Msg] = duron.Provided,
    stop: duron.Signal[str] = duron.Provided,
    events: duron.StreamWriter[Event] = duron.Provided,
) -> dict[str, list[str]]:
    trace: list[str] = []
    accepted, accept = await ctx.create_stream(Msg, name="accepted")

    async def receive() -> None:
        expected = 0
        async for msg in inbox:
            if msg.seq < expected:
                trace.append(f"repeat {msg.seq}")
                continue
            if msg.seq > expected:
                raise AssertionError(f"message {msg.seq} arrived before {expected}")
            trace.append(f"message {msg.seq}")
            await events.send(Event(kind="got", turn=msg.seq))
            await accept.send(msg)
            expected += 1
            if expected == turns:
                await accept.close()
                return

    receiver = asyncio.create_task(receive())
    outcomes = [
        await one_turn(ctx, msg.seq, stop, events, trace) async for msg in accepted
    ]
    await receiver
    await events.close()
    return {"outcomes": outcomes, "trace": trace}


def expected_outcomes(turns: int = TURNS) -> list[str]:
    out = []
    for k in range(turns):
        tools = sum(k * 10 + i for i in range(TOOLS))
        out.append(
            [
                f"tools {tools}",
                f"interrupted: stop turn {k}",
                f"approved {k * 10}, tools {tools}",
                "deadline passed",
            ][k % 4]
        )
    return out


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


async def main(directory: Path, seed: int) -> None:
    _Side.path = directory / "effects.log"
    rng = random.Random(seed)
    storage = FileLogStorage(directory / "log.jsonl", durability="fsync")
    async with session.invoke(storage) as job:
        await job.start(TURNS)
        inbox = await job.open_stream("inbox", "w")
        stop = await job.open_stream("stop", "w")
        received: set[int] = set()
        sending = anyio.CancelScope()

        async def send_messages() -> None:
            with sending:
                await send_all()

        async def send_all() -> None:
            for k in range(TURNS):
                await anyio.sleep(rng.uniform(0.005, 0.04))
                if k in received:
                    continue
                try:
                    await inbox.send(Msg(seq=k, text=f"message {k}"))
                except duron.UsageError:
                    return  # the job ended first

        async def react() -> None:
            async for event in await job.open_stream("events", "r"):
                emit({"event": event.model_dump()})
                if event.kind == "got":
                    received.add(event.turn)
                elif event.kind == "interrupt-me" and job.is_future_pending(
                    event.future
                ):
                    await stop.send(f"stop turn {event.turn}")
                elif event.kind == "approve-me" and job.is_future_pending(event.future):
                    await job.complete_future(event.future, result=event.turn * 10)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_messages)
            tg.start_soon(react)
            result = await job.wait()
            sending.cancel()  # the host reader finishes on its own: the stream ends
    emit({"result": result})


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[3]), backend=sys.argv[2])
