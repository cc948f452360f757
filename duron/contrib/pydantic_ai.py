"""Durable pydantic-ai agents: model requests and tool calls recorded as Duron effects.

```python
agent = Agent(model, name="support", capabilities=[DuronDurability()])


@duron.durable
async def support(ctx: duron.Context, question: str) -> str:
    result = await DurableAgent(agent).run(ctx, question)
    return result.output
```

Inside a durable function every model request and every tool call of the agent is an
effect: recorded once, replayed from the log after a crash or a restart, so the run
goes on from the call that was cut off without calling the model or the tools again.
See docs/pydantic-ai.md for the names the log records and what ``duron verify`` checks.

Needs ``pip install 'duron[pydantic-ai]'``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import duron
from duron._durable_loop import in_durable_code

try:
    from pydantic_ai import (
        Agent,
        CustomEvent,
        DeferredToolRequests,
        DeferredToolResults,
    )

    # The one name not public: see _job_clock.
    from pydantic_ai._utils import _now_utc_clock  # pyright: ignore[reportPrivateUsage]
    from pydantic_ai.durable_exec import (
        JSON_CODEC,
        BaseDurabilityCapability,
        DurabilityEngineSpec,
        conversation_id_from_run_id,
    )
    from pydantic_ai.tools import RunContext, ToolApproved, ToolDenied
except ImportError as _missing:
    raise ImportError(
        "duron.contrib.pydantic_ai needs pydantic-ai-slim in the tested range "
        f"({_missing}): pip install 'duron[pydantic-ai]'"
    ) from _missing

from duron.contrib._pydantic_ai_effects import (
    EffectBackend,
    current_context,
    operation_name,
    set_context,
)

if TYPE_CHECKING:
    from pydantic_ai.agent import AbstractAgent, AgentRunResult
    from pydantic_ai.messages import AgentStreamEvent, ModelMessage
    from pydantic_ai.models import Model

__all__ = [
    "ApprovalRequested",
    "CallRequested",
    "DurableAgent",
    "DuronDurability",
    "durable_context",
    "operation_name",
]

_Deps = TypeVar("_Deps")
_Out = TypeVar("_Out")


class DuronDurability(BaseDurabilityCapability[Any]):
    """The pydantic-ai capability that makes an agent's runs durable under Duron.

    Attach it when building the agent (``Agent(..., name="support",
    capabilities=[DuronDurability()])``) and run the agent with
    :class:`DurableAgent` inside a ``@duron.durable`` function. Outside durable code
    the agent runs as it would without it.

    Each model request, tool call, MCP call and toolset listing of a run becomes one
    effect named after the agent (see :func:`operation_name`); messages and results
    are recorded as pydantic-ai's own types and rebuilt as those types on replay.
    Timestamps and run ids in the messages come from the job's clock and random
    source, so a replay asks for exactly what the first run asked for.

    Args:
        name: The name the effects carry (default: the agent's ``name``). Keep it
            stable: it is part of every recorded operation's name.
        models: Other models the run may switch to, by id (pydantic-ai's
            ``models=``: a run's model is rebuilt from its id inside the effect).
        model_retry: How a failed model request is tried again
            (:class:`~duron.RetryPolicy`; default: not retried). Each attempt is
            recorded; a replay takes the recorded path without waiting.
        model_timeout: Seconds one model request may take before it is
            cancelled and counts as a failed attempt.
        tool_retry: The same for tool calls.
        tool_timeout: The same for tool calls.
    """

    engine_spec: ClassVar[DurabilityEngineSpec] = DurabilityEngineSpec(
        engine_name="Duron",
        durable_unit_noun="effect",
        durable_container_noun="durable function",
        codec=JSON_CODEC,
        # Effects run in the durable function's process: an MCP toolset keeps one
        # session per run, entered by the first effect that needs it.
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
    )

    def __init__(
        self,
        *,
        name: str | None = None,
        models: Mapping[str, Model] | None = None,
        model_retry: duron.RetryPolicy | None = None,
        model_timeout: float | None = None,
        tool_retry: duron.RetryPolicy | None = None,
        tool_timeout: float | None = None,
    ) -> None:
        super().__init__(name=name, models=models)
        self._policies = {
            "model": (model_retry, model_timeout),
            "tool": (tool_retry, tool_timeout),
        }
        self._backend: EffectBackend | None = None

    def _bind_to_agent(self, agent: AbstractAgent[Any, Any]) -> None:
        self._backend = EffectBackend(self.name, self._policies)
        super()._bind_to_agent(agent)

    def get_durable_operation_backend(self) -> EffectBackend:
        """pydantic-ai's hook: the backend that runs operations as Duron effects."""
        assert self._backend is not None, "bound to an agent by pydantic-ai first"
        return self._backend

    @property
    def in_durable_context(self) -> bool:
        """Whether the agent runs in durable code (a ``@duron.durable`` function)."""
        return in_durable_code()

    def get_default_run_id(self) -> str | None:
        """A run id drawn from the job's random source: the same on every replay."""
        ctx = current_context()
        if ctx is None or not in_durable_code():
            return None
        return str(uuid.UUID(int=ctx.random().getrandbits(128), version=4))

    def get_default_conversation_id(self, run_id: str) -> str | None:
        """Derived from the run id, so that it replays too."""
        return conversation_id_from_run_id(run_id) if in_durable_code() else None

    def get_run_clock(self) -> Callable[[], datetime] | None:
        """The job's clock, for a run's ``timeout=`` (replayed, like every time)."""
        return _job_now if in_durable_code() else None

    async def durable_sleep(self, seconds: float) -> None:
        """A durable timer: a restarted job does not wait again through time passed."""
        await asyncio.sleep(max(seconds, 0.0))


def _job_now() -> datetime:
    """The job's clock in durable code, the wall clock elsewhere (inside an effect)."""
    if in_durable_code():
        return datetime.fromtimestamp(
            asyncio.get_running_loop().time(), tz=timezone.utc
        )
    return datetime.now(tz=timezone.utc)


def _job_clock() -> None:
    """Stamp the messages of this task's agent run with the job's clock.

    pydantic-ai stamps each message it builds with the time; replay compares the
    messages a model request is asked with against the log, so in durable code the
    time must be the job's (recorded) one. pydantic-ai keeps this seam for engines
    whose replay checks what a durable unit is called with; it is not public yet,
    hence the tested version range of the extra.
    """
    _now_utc_clock.set(_job_now)


def durable_context() -> duron.Context:
    """The Duron context of the agent run calling this: for durable-aware tools.

    A tool marked ``durable=False`` runs in the durable function itself rather than
    as an effect; it can then wait for a durable future, sleep on a durable timer or
    run effects of its own through this context.

    Raises:
        UsageError: Not called from within :meth:`DurableAgent.run`.
    """
    ctx = current_context()
    if ctx is None or not in_durable_code():
        raise duron.UsageError(
            "durable_context() is only available in durable code run by "
            "DurableAgent.run(ctx, ...): a tool that uses it needs durable=False"
        )
    return ctx


@dataclass(kw_only=True)
class ApprovalRequested(CustomEvent, name="duron.approval_requested"):
    """Sent on the run's event stream when a tool call waits for approval.

    Complete the future to decide: ``await job.complete_future(event.future_id,
    result=True)`` (or ``False``, or a ``ToolDenied(message=...)``).
    """

    future_id: str
    args: dict[str, Any]


@dataclass(kw_only=True)
class CallRequested(CustomEvent, name="duron.call_requested"):
    """Sent on the run's event stream when a deferred tool is to be run by the host.

    Complete the future with the tool's result: ``await
    job.complete_future(event.future_id, result=...)``.
    """

    future_id: str
    args: dict[str, Any]


Decision = bool | ToolApproved | ToolDenied
"""What the host answers an :class:`ApprovalRequested` with."""


class DurableAgent(Generic[_Deps, _Out]):
    """Runs a pydantic-ai agent inside a ``@duron.durable`` function.

    The agent needs a :class:`DuronDurability` capability. Tool calls that need
    approval, and deferred tools the host runs, end pydantic-ai's run with
    ``DeferredToolRequests`` (when the agent's output type includes it); ``run``
    then waits for each answer on a durable future (announced on ``events`` by an
    :class:`ApprovalRequested` or :class:`CallRequested`) and carries on, so the
    run it returns has gone through to the agent's final output.

    Args:
        agent: The pydantic-ai agent.

    Raises:
        UsageError: The agent has no :class:`DuronDurability` capability.
    """

    def __init__(self, agent: Agent[_Deps, _Out]) -> None:
        if DuronDurability.from_agent(agent) is None:
            raise duron.UsageError(
                f"agent {agent.name!r} has no DuronDurability capability: build it "
                "with Agent(..., capabilities=[DuronDurability()])"
            )
        self.agent = agent

    async def run(
        self,
        ctx: duron.Context,
        user_prompt: str | None = None,
        *,
        deps: _Deps = None,  # type: ignore[assignment]
        message_history: Sequence[ModelMessage] | None = None,
        events: duron.StreamWriter[AgentStreamEvent] | None = None,
        **kwargs: Any,
    ) -> AgentRunResult[_Out]:
        """Run the agent as part of the job ``ctx`` belongs to.

        Args:
            ctx: The durable function's context.
            user_prompt: The user's message.
            deps: The run's dependencies, as pydantic-ai's ``deps=`` (never recorded).
            message_history: Earlier messages, as pydantic-ai's ``message_history=``.
            events: Where the run's events go (pydantic-ai's ``AgentStreamEvent``s,
                plus :class:`ApprovalRequested` / :class:`CallRequested`). The same
                events are sent again when the job replays.
            **kwargs: Other arguments of ``Agent.run`` (``model_settings``,
                ``usage_limits``, ...).

        Returns:
            pydantic-ai's run result: output, messages and usage.
        """
        # The run gets a task, hence a context, of its own: the job's context and
        # clock are set there and never reset, so that a job closed mid-run leaves
        # nothing to undo in another context when its coroutines are collected.
        return await asyncio.ensure_future(
            self._run(ctx, user_prompt, deps, message_history, events, kwargs)
        )

    async def _run(
        self,
        ctx: duron.Context,
        user_prompt: str | None,
        deps: _Deps,
        message_history: Sequence[ModelMessage] | None,
        events: duron.StreamWriter[AgentStreamEvent] | None,
        kwargs: dict[str, Any],
    ) -> AgentRunResult[_Out]:
        set_context(ctx)
        _job_clock()
        handler = _send_to(events) if events is not None else None
        result: AgentRunResult[_Out] = await self.agent.run(
            user_prompt,
            deps=deps,
            message_history=message_history,
            event_stream_handler=handler,
            **kwargs,
        )
        while isinstance(result.output, DeferredToolRequests):
            answers = await _answer(ctx, result.output, events)
            result = await self.agent.run(
                None,
                deps=deps,
                message_history=result.all_messages(),
                deferred_tool_results=answers,
                event_stream_handler=handler,
                **kwargs,
            )
        return result


def _send_to(
    events: duron.StreamWriter[AgentStreamEvent],
) -> Callable[[RunContext[Any], AsyncIterable[AgentStreamEvent]], Any]:
    async def handler(
        _: RunContext[Any], stream: AsyncIterable[AgentStreamEvent]
    ) -> None:
        async for event in stream:
            await events.send(event)

    return handler


async def _answer(
    ctx: duron.Context,
    requests: DeferredToolRequests,
    events: duron.StreamWriter[AgentStreamEvent] | None,
) -> DeferredToolResults:
    """Wait, on durable futures, for the host's answer to each deferred tool call."""
    answers = DeferredToolResults()
    waits: list[tuple[dict[str, Any], str, Any]] = []
    for call in requests.approvals:
        future_id, decided = await ctx.create_future(
            Decision, name=f"approve {call.tool_name}"
        )
        if events is not None:
            await events.send(
                ApprovalRequested(
                    future_id=future_id,
                    tool_name=call.tool_name,
                    args=call.args_as_dict(),
                    tool_call_id=call.tool_call_id,
                )
            )
        waits.append((answers.approvals, call.tool_call_id, decided))
    for call in requests.calls:
        future_id, done = await ctx.create_future(Any, name=f"call {call.tool_name}")
        if events is not None:
            await events.send(
                CallRequested(
                    future_id=future_id,
                    tool_name=call.tool_name,
                    args=call.args_as_dict(),
                    tool_call_id=call.tool_call_id,
                )
            )
        waits.append((answers.calls, call.tool_call_id, done))
    values = await asyncio.gather(*(w for _, _, w in waits))
    for (into, call_id, _), value in zip(waits, values, strict=True):
        into[call_id] = value
    return answers
