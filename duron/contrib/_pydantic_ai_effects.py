"""pydantic-ai's durable operations as Duron effects: names, recorded inputs, results.

pydantic-ai hands a durability engine each unit of I/O of an agent run as a
``DurableOperation`` (a model request, a tool call, an MCP listing, ...). Here each one
becomes one ``ctx.run`` of an effect whose name and inputs say what was asked, so the
log reads as the conversation and ``duron verify`` compares a run's requests with the
code's. The live objects the operation needs (its run context, the toolset, the deps)
ride on the effect's bound instance: they are never encoded.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic_ai.durable_exec import (
    CapabilityOperationId,
    DurableOperation,
    DurableOperationBackend,
    DurableOperationId,
    DynamicToolsetCallToolParams,
    EventStreamHandlerId,
    ModelCancelSuspendedResponseId,
    ModelCompactMessagesId,
    ModelCountTokensId,
    ModelRequestId,
    ModelRequestParams,
    ToolsetCallToolId,
    ToolsetCallToolParams,
    ToolsetGetInstructionsId,
    ToolsetGetToolsId,
    ToolsetValidateToolArgumentsId,
)

# The effect bodies' annotations are read at run time (they type the log's inputs).
from pydantic_ai.messages import ModelMessage, ModelRequest
from pydantic_ai.settings import ModelSettings  # noqa: TC002
from pydantic_ai.tools import ToolDefinition  # noqa: TC002

import duron

__all__ = ["AGENT_TOOLSET_ID", "EffectBackend", "current_context", "operation_name"]

AGENT_TOOLSET_ID = "<agent>"
"""The id pydantic-ai gives the toolset of tools registered on the agent itself."""

_context: contextvars.ContextVar[duron.Context | None] = contextvars.ContextVar(
    "duron.contrib.pydantic_ai.context", default=None
)


def current_context() -> duron.Context | None:
    """The Duron context of the durable agent run this task belongs to, if any."""
    return _context.get()


def set_context(ctx: duron.Context) -> None:
    """Make ``ctx`` the context of the agent run of the current task."""
    _context.set(ctx)


def operation_name(
    agent: str, operation_id: DurableOperationId, label: str | None = None
) -> str:
    """The effect name an operation is recorded under (documented in docs/pydantic-ai.md).

    These names are what ``duron verify`` compares: changing them strands the logs of
    running jobs, so they follow pydantic-ai's operation ids, never class names.
    """
    match operation_id:
        case ModelRequestId(model_id=model_id, streaming=streaming):
            kind = "request_stream" if streaming else "request"
            return f"{agent}.model.{kind}{_model(model_id)}"
        case ModelCountTokensId(model_id=model_id):
            return f"{agent}.model.count_tokens{_model(model_id)}"
        case ModelCompactMessagesId(model_id=model_id):
            return f"{agent}.model.compact_messages{_model(model_id)}"
        case ModelCancelSuspendedResponseId(model_id=model_id):
            return f"{agent}.model.cancel_suspended_response{_model(model_id)}"
        case EventStreamHandlerId():
            return f"{agent}.event_stream_handler"
        case ToolsetCallToolId(toolset_kind=kind, toolset_id=toolset_id):
            return f"{_toolset(agent, kind, toolset_id)}tool.{label or '?'}"
        case ToolsetValidateToolArgumentsId(toolset_kind=kind, toolset_id=toolset_id):
            return f"{_toolset(agent, kind, toolset_id)}validate_args"
        case ToolsetGetToolsId(toolset_kind=kind, toolset_id=toolset_id):
            return f"{_toolset(agent, kind, toolset_id)}get_tools"
        case ToolsetGetInstructionsId(toolset_id=toolset_id):
            return f"{_toolset(agent, 'mcp', toolset_id)}get_instructions"
        case CapabilityOperationId(capability_id=capability_id, operation=operation):
            return f"{agent}.capability.{capability_id}.{operation}"
        case _:  # pydantic-ai adds operation kinds in minor releases
            return f"{agent}.{type(operation_id).__name__}"


def _model(model_id: str | None) -> str:
    return "" if model_id is None or model_id == "default" else f":{model_id}"


def _toolset(agent: str, kind: str, toolset_id: str) -> str:
    if kind == "function" and toolset_id == AGENT_TOOLSET_ID:
        return f"{agent}."
    return f"{agent}.{kind}.{toolset_id}."


OperationRole = Literal["model", "event", "tool", "capability"]


class _Call:
    """One operation call: what the effect runs (never encoded, never recorded)."""

    __slots__ = ("operation", "params")

    def __init__(self, operation: DurableOperation[Any, Any, Any], params: Any) -> None:
        self.operation = operation
        self.params = params

    async def run(self) -> Any:
        op = self.operation
        return op.result_codec.dump(await op.handler(self.params))


# The effect bodies. Their parameters are what the log records for each kind of
# operation (``self`` is the call, not an input); they all just run the operation.


async def _model_request(
    self: _Call,
    tools: list[str],
    instructions: str | None,
    messages: list[ModelMessage],
    tool_definitions: list[ToolDefinition],
    output_mode: str,
    settings: ModelSettings | None,
) -> Any:
    return await self.run()


async def _tool_call(self: _Call, args: dict[str, Any], call_id: str | None) -> Any:
    return await self.run()


async def _other(self: _Call) -> Any:
    return await self.run()


def _model_inputs(params: ModelRequestParams) -> tuple[Any, ...]:
    mrp = params.model_request_parameters
    defs = [*mrp.function_tools, *mrp.output_tools]
    last = next(
        (m for m in reversed(params.messages) if isinstance(m, ModelRequest)), None
    )
    instructions = last.instructions if last is not None else None
    return (
        [d.name for d in defs],
        instructions,
        params.messages,
        defs,
        mrp.output_mode,
        params.model_settings,
    )


def _tool_inputs(
    params: ToolsetCallToolParams | DynamicToolsetCallToolParams,
) -> tuple[Any, ...]:
    return (params.tool_args, params.ctx.tool_call_id)


def _body_and_inputs(params: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    if isinstance(params, ModelRequestParams):
        return _model_request, _model_inputs(params)
    if isinstance(params, (ToolsetCallToolParams, DynamicToolsetCallToolParams)):
        return _tool_call, _tool_inputs(params)
    return _other, ()


class _BoundOperation:
    """An operation bound to Duron: each call is one effect of the running job."""

    def __init__(
        self, backend: EffectBackend, operation: DurableOperation[Any, Any, Any]
    ) -> None:
        self._backend = backend
        self._operation = operation

    @property
    def operation(self) -> DurableOperation[Any, Any, Any]:
        return self._operation

    async def __call__(self, params: Any, *, config: object | None = None) -> Any:
        op = self._operation
        ctx = _context.get()
        if ctx is None:
            raise duron.UsageError(
                f"agent {self._backend.agent_name!r} runs inside a durable function "
                "but not through DurableAgent: run it with "
                "`await DurableAgent(agent).run(ctx, prompt)` so that its model "
                "requests and tool calls are recorded"
            )
        label = op.invocation_label(params) if op.invocation_label else None
        name = operation_name(self._backend.agent_name, op.operation_id, label)
        body, inputs = _body_and_inputs(params)
        effect = self._backend.effect(name, body, op.config_role)
        payload = await ctx.run(types.MethodType(effect, _Call(op, params)), *inputs)
        return op.result_codec.load(payload)


class EffectBackend(DurableOperationBackend[None]):
    """pydantic-ai's backend seam for Duron: binds every operation to effects."""

    def __init__(
        self,
        agent_name: str,
        policies: Mapping[str, tuple[duron.RetryPolicy | None, float | None]]
        | None = None,
    ) -> None:
        self.agent_name = agent_name
        # role ("model", "tool") -> (retry policy, per-attempt timeout)
        self._policies = dict(policies or {})
        self._effects: dict[tuple[str, Callable[..., Any]], Callable[..., Any]] = {}

    def bind(self, operation: DurableOperation[Any, Any, Any]) -> Any:
        return _BoundOperation(self, operation)

    def config_for_tool(
        self,
        operation: DurableOperation[Any, Any, Any],
        *,
        tool: object | None,
        tool_name: str,
    ) -> None:
        return None

    def registrations(self) -> Sequence[Callable[..., object]]:
        return ()

    def effect(
        self, name: str, body: Callable[..., Any], role: OperationRole
    ) -> Callable[..., Any]:
        """The effect named ``name`` running ``body`` (one per name: its types are
        read once)."""
        key = (name, body)
        fn = self._effects.get(key)
        if fn is None:
            retry, timeout = self._policies.get(role, (None, None))
            fn = self._effects[key] = duron.effect(
                name=name, retry=retry, timeout=timeout
            )(_copy(body))
        return fn


def _copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A fresh function object per effect name: an effect's spec lives on it."""
    copy = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__annotations__ = fn.__annotations__
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = fn.__module__
    return copy
