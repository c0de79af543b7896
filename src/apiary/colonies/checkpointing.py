"""Worker hooks: the worker's prompt and tools, and the checkpoint written at each step (SPEC B 3.9)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from apiary.agent.context import RunContext
from apiary.core.clock import utc_iso
from apiary.core.messages import JsonObject, tool_calls_of
from apiary.tools.base import Toolset

if TYPE_CHECKING:
    from apiary.colonies.execution import Execution

DEFAULT_WORKER_PROMPT = ("You are a worker started by the queen for one task. Use your tools. Call set_output when "
                         "done; call escalate when stuck or when human judgement is needed.")
DESCRIPTIONS = {"node_start": "node start", "loop_iteration": "after iteration", "node_complete": "node complete",
                "interrupted": "interrupted"}


def pending_calls(ctx: RunContext) -> list[JsonObject]:
    """Tool calls of the last stored model response, each with its result if one exists."""
    messages = ctx.state.messages
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            results = {m.get("tool_use_id"): m for m in messages[index + 1:] if m["role"] == "tool"}
            return [{"id": c.id, "name": c.name, "arguments": c.arguments,
                     "result": results[c.id]["content"] if c.id in results else None}
                    for c in tool_calls_of(messages[index])]
    return []


def build_checkpoint(execution: Execution, ctx: RunContext, kind: str, checkpoint_id: str, now: float, *,
                     is_clean: bool = True) -> dict[str, Any]:
    state = ctx.state
    done = kind == "node_complete"
    return {
        "checkpoint_id": checkpoint_id, "checkpoint_type": kind, "session_id": execution.id, "run_id": ctx.run_id,
        "created_at": utc_iso(now), "current_node": "worker", "next_node": None if done else "worker",
        "execution_path": ["worker"], "data_buffer": {}, "accumulated_outputs": dict(state.outputs),
        "metrics_snapshot": {"input_tokens": state.input_tokens, "output_tokens": state.output_tokens,
                             "tool_calls": state.tool_calls_used, "iterations": state.iteration},
        "is_clean": is_clean, "description": DESCRIPTIONS.get(kind, kind),
        "loop": {**state.cursor(ctx.node_id), "empty_streak": state.empty_streak},
        "pending": pending_calls(ctx),
        "task": execution.claim_json(),
        "input_data": execution.input_data,
    }


class WorkerHooks:
    def __init__(self, execution: Execution, tools: Toolset) -> None:
        self.execution = execution
        self._tools = tools

    def system_prompt(self) -> str:
        return self.execution.runtime.spec.system_prompt or DEFAULT_WORKER_PROMPT

    def tools(self) -> Toolset:
        return self._tools

    def iteration_data(self) -> JsonObject:
        return {}

    async def after_iteration(self, ctx: RunContext, kind: str) -> None:
        await self.execution.checkpoint(ctx, kind)

    async def on_escalation(self, ctx: RunContext, request_id: str, reason: str, context: str) -> None:
        await asyncio.sleep(0)
        self.execution.runtime.tell_queen(
            f"[WORKER ESCALATION] Worker {self.execution.id} needs guidance (request_id {request_id}): {reason}"
            + (f"\nContext: {context}" if context else ""))
