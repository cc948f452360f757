"""Durable pydantic-ai agents in one process: approvals, durable-aware tools, names.

Approvals go through pydantic-ai's deferred tools: the run ends with
``DeferredToolRequests``, ``DurableAgent.run`` announces each call on the event stream
(``ApprovalRequested``) and waits on a durable future the host completes. A host
that stops while the approval is pending and a new one that answers it later
resume the same run: nothing before the approval is called again.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import anyio
import orjson
import pytest
from pydantic_ai import (
    Agent,
    DeferredToolRequests,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolDenied,
)
from pydantic_ai.messages import AgentStreamEvent, ModelMessage, ToolReturnPart
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)

import duron
from duron.contrib.pydantic_ai import (
    ApprovalRequested,
    DurableAgent,
    DuronDurability,
    durable_context,
)
from duron.contrib.storage import FileLogStorage, MemoryLogStorage

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

CALLED: list[str] = []


def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    CALLED.append("model")
    last = messages[-1].parts[-1]
    if isinstance(last, ToolReturnPart):
        return ModelResponse(parts=[TextPart(f"tool said: {last.content}")])
    return ModelResponse(
        parts=[ToolCallPart("delete_file", {"path": "notes.txt"}, tool_call_id="c1")]
    )


def streamed(
    fn: Callable[[list[ModelMessage], AgentInfo], ModelResponse],
) -> FunctionModel:
    """``fn`` as a model that answers plain and streamed requests alike."""

    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        for i, part in enumerate(fn(messages, info).parts):
            if isinstance(part, ToolCallPart):
                yield {
                    i: DeltaToolCall(
                        name=part.tool_name,
                        json_args=part.args_as_json_str(),
                        tool_call_id=part.tool_call_id,
                    )
                }
            elif isinstance(part, TextPart):
                yield part.content

    return FunctionModel(fn, stream_function=stream)


agent: Agent[None, str | DeferredToolRequests] = Agent(
    streamed(model),
    name="files",
    output_type=[str, DeferredToolRequests],
    capabilities=[DuronDurability()],
)


@agent.tool_plain(requires_approval=True)
def delete_file(path: str) -> str:
    CALLED.append(f"delete {path}")
    return f"deleted {path}"


@duron.durable
async def cleanup(
    ctx: duron.Context,
    request: str,
    events: duron.StreamWriter[AgentStreamEvent] = duron.Provided,
) -> str:
    result = await DurableAgent(agent).run(ctx, request, events=events)
    await events.close()
    assert isinstance(result.output, str)
    return result.output


async def host(log: Path, answer: object | None) -> tuple[list[str], str | None]:
    """Run the job; answer the approval with ``answer``, or stop when it is asked."""
    shown: list[str] = []
    async with cleanup.invoke(FileLogStorage(log)) as job:
        await job.start("Delete my notes")
        async for event in await job.open_stream("events", "r"):
            shown.append(event.event_kind)
            if not isinstance(event, ApprovalRequested):
                continue
            assert (event.tool_name, event.args) == (
                "delete_file",
                {"path": "notes.txt"},
            )
            if answer is None:
                return shown, None
            if job.is_future_pending(event.future_id):
                await job.complete_future(event.future_id, result=answer)
        return shown, await job.wait()


async def test_a_tool_waits_for_the_hosts_approval(tmp_path: Path) -> None:
    CALLED.clear()
    shown, result = await host(tmp_path / "log.jsonl", True)
    assert result == "tool said: deleted notes.txt"
    assert CALLED == ["model", "delete notes.txt", "model"]
    assert "custom" in shown  # the ApprovalRequested event


async def test_a_denied_tool_never_runs(tmp_path: Path) -> None:
    CALLED.clear()
    _, result = await host(tmp_path / "log.jsonl", ToolDenied("not today"))
    assert result == "tool said: not today"
    assert CALLED == ["model", "model"]


async def test_an_approval_answered_after_the_host_restarted(tmp_path: Path) -> None:
    CALLED.clear()
    log = tmp_path / "log.jsonl"
    first, result = await host(log, None)  # stops while the approval is pending
    assert result is None
    assert CALLED == ["model"]

    second, result = await host(log, True)
    assert result == "tool said: deleted notes.txt"
    # The first model step was replayed, not called again.
    assert CALLED == ["model", "delete notes.txt", "model"]
    assert second[: len(first)] == first  # the restarted host saw the same events

    CALLED.clear()
    assert await host(log, True) == (second, result)  # all replayed
    assert CALLED == []


# -- a durable-aware tool: runs in durable code (durable=False), uses the job ----------


def ask_once(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if isinstance(messages[-1].parts[-1], ToolReturnPart):
        return ModelResponse(parts=[TextPart(str(messages[-1].parts[-1].content))])
    return ModelResponse(
        parts=[ToolCallPart("nap", {"seconds": 0.05}, tool_call_id="n")]
    )


sleeper = Agent(
    FunctionModel(ask_once), name="sleeper", capabilities=[DuronDurability()]
)


@duron.effect
async def wake_up() -> str:
    CALLED.append("wake_up")
    return "awake"


@sleeper.tool_plain(durable=False)
async def nap(seconds: float) -> str:
    ctx = durable_context()
    before = await ctx.time()
    await anyio.sleep(seconds)  # a durable timer
    slept = await ctx.time() - before
    return f"{await ctx.run(wake_up)} after {slept:.2f} s"


@duron.durable
async def nap_job(ctx: duron.Context) -> str:
    result = await DurableAgent(sleeper).run(ctx, "take a nap")
    return result.output


async def test_a_durable_aware_tool_runs_in_durable_code(tmp_path: Path) -> None:
    CALLED.clear()
    log = tmp_path / "log.jsonl"
    for _ in range(2):  # the second time, replayed
        async with nap_job.invoke(FileLogStorage(log)) as job:
            await job.start()
            assert await job.wait() == "awake after 0.05 s"
    assert CALLED == ["wake_up"]
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    names = [e["name"] for e in entries if e["type"] == "done"]
    # The tool itself is no effect: its timer and its own effect are in the log.
    assert names == ["sleeper.model.request", "wake_up", "sleeper.model.request"]


async def test_durable_context_outside_a_durable_run() -> None:
    with pytest.raises(duron.UsageError) as err:
        durable_context()
    assert str(err.value) == (
        "durable_context() is only available in durable code run by "
        "DurableAgent.run(ctx, ...): a tool that uses it needs durable=False"
    )


# -- misuse and the optional extra ----------------------------------------------------


def test_an_agent_without_the_capability_is_refused() -> None:
    plain = Agent(FunctionModel(model), name="plain")
    with pytest.raises(duron.UsageError) as err:
        DurableAgent(plain)
    assert str(err.value) == (
        "agent 'plain' has no DuronDurability capability: build it with "
        "Agent(..., capabilities=[DuronDurability()])"
    )


async def test_an_agent_run_directly_in_durable_code_is_refused() -> None:
    @duron.durable
    async def direct(ctx: duron.Context) -> str:
        return str((await agent.run("Delete my notes")).output)

    async with direct.invoke(MemoryLogStorage()) as job:
        await job.start()
        with pytest.raises(duron.UsageError) as err:
            await job.wait()
    assert str(err.value) == (
        "agent 'files' runs inside a durable function but not through DurableAgent: "
        "run it with `await DurableAgent(agent).run(ctx, prompt)` so that its model "
        "requests and tool calls are recorded"
    )


def test_outside_durable_code_the_agent_runs_as_usual() -> None:
    CALLED.clear()
    result = agent.run_sync("Delete my notes")
    assert isinstance(result.output, DeferredToolRequests)
    assert CALLED == ["model"]


def test_duron_does_not_import_pydantic_ai() -> None:
    code = (
        "import sys, duron, duron.contrib.storage; print('pydantic_ai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_missing_extra_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['pydantic_ai'] = None\n"
        "try:\n"
        "    import duron.contrib.pydantic_ai\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (
        "duron.contrib.pydantic_ai needs pydantic-ai-slim in the tested range "
        "(import of pydantic_ai halted; None in sys.modules): "
        "pip install 'duron[pydantic-ai]'"
    )


# -- retries: a flaky model is tried again by policy, each attempt recorded -----------

FLAKY: list[int] = []


def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    FLAKY.append(1)
    if len(FLAKY) < 3:
        raise ConnectionError(f"model unreachable ({len(FLAKY)})")
    return ModelResponse(parts=[TextPart("hello at last")])


patient = Agent(
    FunctionModel(flaky),
    name="patient",
    capabilities=[
        DuronDurability(
            model_retry=duron.RetryPolicy(
                max_attempts=3, initial_interval=0.01, jitter=0
            ),
            model_timeout=5,
        )
    ],
)


@duron.durable
async def greet(ctx: duron.Context) -> str:
    result = await DurableAgent(patient).run(ctx, "hi")
    return result.output


async def test_model_requests_retry_by_the_capabilitys_policy(tmp_path: Path) -> None:
    FLAKY.clear()
    log = tmp_path / "log.jsonl"
    for _ in range(2):  # the second time, replayed: the model is not called
        async with greet.invoke(FileLogStorage(log)) as job:
            await job.start()
            assert await job.wait() == "hello at last"
    assert len(FLAKY) == 3
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    attempts = [e for e in entries if e["type"] == "attempt"]
    assert [(a["attempt"], a["error"]["message"]) for a in attempts] == [
        (1, "model unreachable (1)"),
        (2, "model unreachable (2)"),
    ]
