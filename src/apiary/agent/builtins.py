"""Built-in tools the loop itself answers: ask_user, set_output, escalate (SPEC B 3.4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from apiary.agent.context import RunContext
from apiary.core.messages import ToolSpec
from apiary.tools.base import ToolOutput, Toolset

ASK_USER = ToolSpec(
    "ask_user",
    "Ask the user 1 to 8 questions and wait for the answer. Give options for multiple choice.",
    {"type": "object", "properties": {"questions": {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "string"}, "prompt": {"type": "string"},
        "options": {"type": "array", "items": {"type": "string"}}}, "required": ["prompt"]}}},
     "required": ["questions"]},
)
SET_OUTPUT = ToolSpec(
    "set_output",
    "Record an output of your task under a key. Call it when the work is done.",
    {"type": "object", "properties": {"key": {"type": "string"}, "value": {}}, "required": ["key", "value"]},
)
ESCALATE = ToolSpec(
    "escalate",
    "Ask the queen for guidance when you are stuck or human judgement is needed; then wait.",
    {"type": "object", "properties": {"reason": {"type": "string"}, "context": {"type": "string"}},
     "required": ["reason"]},
)
BUILTIN_NAMES = frozenset({"ask_user", "set_output", "escalate"})
PREVIEW_CHARS = 2000


def builtin_specs(role: str, tools: Toolset) -> list[ToolSpec]:
    if role == "queen":
        return [ASK_USER]
    return [SET_OUTPUT, ESCALATE, *([ASK_USER] if "ask_user" in tools else [])]


def normalise_questions(args: dict[str, Any], *, need_options: bool) -> list[dict[str, Any]] | str:
    """The questions of an ask_user call, or an error text."""
    raw = args.get("questions")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not 1 <= len(raw) <= 8:
        return "ask_user needs 1 to 8 questions"
    questions = []
    for i, q in enumerate(raw):
        if not isinstance(q, dict):
            return f"questions[{i}] must be an object"
        prompt = q.get("prompt", q.get("question"))
        if not isinstance(prompt, str) or not prompt.strip():
            return f"questions[{i}] needs a prompt"
        options = [str(o) for o in q.get("options") or []]
        if need_options and len(options) < 2:
            return f"questions[{i}] needs at least two options"
        questions.append({"id": str(q.get("id") or f"q{i + 1}"), "prompt": prompt, "options": options})
    return questions


async def wait_for_answer(ctx: RunContext, request_id: str, *, emit_request: bool,
                          questions: list[dict[str, Any]] | None = None) -> str:
    """Park until an answer for ``request_id`` (or a plain client input) arrives."""
    ctx.waiting_requests[request_id] = ctx.clock.monotonic()
    ctx.state.pending_input = {"questions": questions, "emit_client_request": emit_request,
                               "request_id": request_id}
    try:
        requested = False
        while True:
            item = ctx.take(answer_for=request_id)
            if item is not None:
                return item.content
            if ctx.shutdown:
                raise asyncio.CancelledError
            ctx.wake.clear()
            if emit_request and not requested:
                requested = True
                await ctx.save_cursor()
                await ctx.emitter.emit("client_input_requested", {"questions": questions} if questions else {})
                continue
            await ctx.wake.wait()
    finally:
        ctx.waiting_requests.pop(request_id, None)
        ctx.state.pending_input = None


async def run_builtin(ctx: RunContext, name: str, args: dict[str, Any]) -> ToolOutput:
    if name == "set_output":
        key = args.get("key")
        if not isinstance(key, str) or not key:
            return ToolOutput("set_output needs a non-empty string key", is_error=True)
        ctx.state.outputs[key] = args.get("value")
        return ToolOutput(f"Output '{key}' recorded.")
    if name == "ask_user":
        questions = normalise_questions(args, need_options=ctx.role == "worker")
        if isinstance(questions, str):
            return ToolOutput(questions, is_error=True)
        request_id = questions[0]["id"] if len(questions) == 1 else f"ask_{ctx.ids.hex(8)}"
        answer = await wait_for_answer(ctx, request_id, emit_request=True, questions=questions)
        return ToolOutput(answer)
    reason = str(args.get("reason") or "no reason given")
    context = str(args.get("context") or "")
    return ToolOutput(await escalate(ctx, reason, context))


async def escalate(ctx: RunContext, reason: str, context: str = "") -> str:
    request_id = f"esc_{ctx.ids.hex(12)}"
    await ctx.emitter.emit("escalation_requested", {"request_id": request_id, "reason": reason, "context": context})
    await ctx.hooks.on_escalation(ctx, request_id, reason, context)
    return await wait_for_answer(ctx, request_id, emit_request=False)


def preview(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:PREVIEW_CHARS]
