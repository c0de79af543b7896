"""Restoring a loop from its conversation store (SPEC B 3.9)."""

from __future__ import annotations

from apiary.agent.context import RunContext
from apiary.core.ids import LEGACY_RUN_ID
from apiary.core.messages import is_well_formed, make_message, tool_calls_of

INTERRUPTED_RESULT = "[Tool call interrupted: the process stopped before this call finished]"


async def restore(ctx: RunContext) -> bool:
    """Load messages and cursor into ``ctx.state``; False means start fresh."""
    conv = await ctx.conversations.load(ctx.owner)
    if conv.meta is None:
        return False
    messages = [m for m in conv.messages if is_well_formed(m)]
    if ctx.role == "worker" and ctx.run_id and ctx.run_id != LEGACY_RUN_ID:
        messages = [m for m in messages if m.get("run_id") == ctx.run_id]
    if not messages:
        return False
    state = ctx.state
    state.messages = messages
    cursor = conv.cursor or {}
    state.restore_cursor(cursor)
    state.next_seq = max(state.next_seq, messages[-1]["seq"] + 1)
    for seq in sorted(conv.partials):
        partial = conv.partials[seq]
        if seq >= messages[-1]["seq"] + 1 and isinstance(partial.get("content"), str) and partial["content"]:
            await ctx.add_message("assistant", partial["content"], truncated=True)
        await ctx.conversations.put_partial(ctx.owner, seq, None)
    await _close_dangling_calls(ctx)
    return True


async def _close_dangling_calls(ctx: RunContext) -> None:
    """Every tool call gets exactly one result, also when the process died mid-call."""
    answered = {m.get("tool_use_id") for m in ctx.state.messages if m["role"] == "tool"}
    for msg in list(ctx.state.messages):
        for call in tool_calls_of(msg):
            if call.id not in answered:
                answered.add(call.id)
                stub = make_message(ctx.state.take_seq(), "tool", INTERRUPTED_RESULT, tool_use_id=call.id,
                                    is_error=True, run_id=ctx.run_id)
                ctx.state.messages.append(stub)
                await ctx.conversations.append_message(ctx.owner, stub)
