"""Compaction inside the loop (SPEC B 3.8): prune old tool results first; if that is not enough,
summarise older messages with the model (a circuit breaker stops after 3 failures), and as a last
resort replace them by a deterministic summary. The summary restates the role and current task."""

from __future__ import annotations

import logging
from typing import Any

from apiary.agent.compaction import facts_block, render, summarise
from apiary.agent.context import RunContext
from apiary.agent.context_budget import needs_compaction, prune_old_results, safe_cut
from apiary.core.messages import JsonObject

logger = logging.getLogger(__name__)
BREAKER_LIMIT = 3


def usage(ctx: RunContext) -> int:
    return ctx.state.estimated_tokens(ctx.hooks.system_prompt())


def current_task(messages: list[JsonObject]) -> str:
    for msg in messages:
        if msg["role"] == "user" and not msg.get("is_system_nudge"):
            return str(msg.get("content", ""))[:1000]
    return ""


def restated(ctx: RunContext, summary: str, removed: list[JsonObject]) -> str:
    role = "the queen, talking with the user" if ctx.role == "queen" else "a worker doing one task"
    task = current_task(removed)
    return (f"[Context compacted. You are {role}. Your current task, as first given: {task}]\n\n"
            f"Summary of the earlier conversation:\n{summary}")


async def _replace_head(ctx: RunContext, keep: int, summary_text: str) -> None:
    messages = ctx.state.messages
    cut = safe_cut(messages, keep)
    if cut <= 0:
        return
    removed, kept = messages[:cut], messages[cut:]
    head: JsonObject = {"seq": removed[0]["seq"], "role": "user", "content": restated(ctx, summary_text, removed),
                        "run_id": ctx.run_id, "is_transition_marker": True}
    ctx.state.messages = [head, *kept]
    ctx.state.forget_sizes()
    await ctx.conversations.replace(ctx.owner, ctx.state.messages, ctx.state.cursor(ctx.node_id))


async def compact_if_needed(ctx: RunContext) -> dict[str, Any] | None:
    """Run the passes until the context fits; return the ``context_compacted`` data, or None."""
    budget = ctx.config.max_context_tokens
    before = max(usage(ctx), ctx.state.last_input_tokens)
    if not needs_compaction(before, budget):
        return None
    level = "prune_only"
    pruned = prune_old_results(ctx.state.messages, protect_tokens=max(2000, budget // 12))
    if pruned.pruned:
        ctx.state.messages = pruned.messages
        ctx.state.forget_sizes()
        await ctx.conversations.replace(ctx.owner, ctx.state.messages, ctx.state.cursor(ctx.node_id))
    if needs_compaction(usage(ctx), budget):
        level = "llm"
        cut = safe_cut(ctx.state.messages, 2)
        older = ctx.state.messages[:cut]
        summary: str | None = None
        if ctx.state.compaction_failures < BREAKER_LIMIT and older:
            try:
                summary = await summarise(ctx.llm, older, max_context_tokens=budget,
                                          preserve_user_messages=False)
                ctx.state.compaction_failures = 0
            except Exception as exc:
                ctx.state.compaction_failures += 1
                logger.warning("model compaction failed (%d in a row): %s", ctx.state.compaction_failures, exc)
        if summary is None:
            level = "structural"
            summary = _emergency_summary(older)
            await _replace_head(ctx, 1, summary)
        else:
            await _replace_head(ctx, 2, summary)
    ctx.state.last_input_tokens = 0
    return {"level": level, "usage_before": before, "usage_after": usage(ctx)}


def _emergency_summary(messages: list[JsonObject]) -> str:
    text = render(messages)
    return text[:2000] + ("\n…\n" + text[-2000:] if len(text) > 4000 else "") + "\n\n" + facts_block(messages)
