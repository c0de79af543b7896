"""Compaction inside the loop: the cheap pass, the model summary, and tool pairs kept whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from apiary.agent.context import BaseHooks, InboxItem, RunContext
from apiary.agent.context_budget import compaction_threshold, is_paired, prune_old_results, safe_cut
from apiary.agent.emitter import Emitter
from apiary.agent.loop import AgentLoop
from apiary.agent.state import LoopConfig
from apiary.bus.bus import EventBus
from apiary.core.clock import SystemClock
from apiary.core.ids import SequentialIds
from apiary.core.messages import ToolCall, make_message
from apiary.llm.demo import DemoLLM
from apiary.storage.memory import MemoryStores
from apiary.tools.base import ToolContext


def conversation(shape: list[int]) -> list[dict]:
    """A paired conversation: each entry is a user turn followed by an assistant with n tool calls."""
    messages: list[dict] = []
    seq = 0
    for turn, calls in enumerate(shape):
        messages.append(make_message(seq, "user", f"question {turn} " + "x" * 50))
        seq += 1
        ids = [f"c{turn}_{i}" for i in range(calls)]
        messages.append(make_message(seq, "assistant", "working", tool_calls=[
            ToolCall(i, "read_file", {"path": "a"}).to_wire() for i in ids]))
        seq += 1
        for i in ids:
            messages.append(make_message(seq, "tool", "y" * 400, tool_use_id=i))
            seq += 1
    return messages


@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=12), st.integers(0, 30))
@settings(max_examples=200, deadline=None)
def test_safe_cut_never_starts_inside_a_tool_pair(shape, keep):
    messages = conversation(shape)
    cut = safe_cut(messages, keep)
    assert cut in (0, len(messages)) or messages[cut]["role"] != "tool"
    assert is_paired(messages[cut:])


@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=12), st.integers(0, 2000))
@settings(max_examples=200, deadline=None)
def test_pruning_keeps_every_pair_and_the_protected_tail(shape, protect):
    messages = conversation(shape)
    result = prune_old_results(messages, protect_tokens=protect)
    assert [m["seq"] for m in result.messages] == [m["seq"] for m in messages]
    assert is_paired(result.messages)
    tail_tokens = 0
    for original, pruned in zip(reversed(messages), reversed(result.messages), strict=True):
        tail_tokens += len(original["content"]) // 4
        if tail_tokens > protect:
            break
        assert pruned == original


def test_threshold_matches_spec():
    assert compaction_threshold(180_000) == 180_000 - (8000 + 27_000)
    assert compaction_threshold(32_000) == 32_000 - (8000 + 4800)


async def test_loop_compacts_a_long_conversation_and_stays_paired(tmp_path: Path):
    stores = MemoryStores()
    clock = SystemClock()
    bus = EventBus(stores.events, clock)
    emitter = Emitter(bus, "s1", stream_id="queen", node_id="queen", execution_id="s1")
    ctx = RunContext(role="queen", owner="queen:s1", run_id="r1", llm=DemoLLM(),
                     config=LoopConfig(max_iterations=100, max_context_tokens=12_000), emitter=emitter,
                     conversations=stores.conversations, recordings=stores.recordings, clock=clock,
                     ids=SequentialIds(), hooks=BaseHooks("You are the queen."),
                     tool_context=ToolContext(workspace=tmp_path))
    loop = AgentLoop(ctx)
    task = asyncio.create_task(loop.run())
    for i in range(12):
        loop.inject(InboxItem(f"message {i}: " + "lorem ipsum " * 60))
        for _ in range(200):
            if not ctx.has_items() and not loop.in_turn:
                break
            await asyncio.sleep(0.01)
    loop.signal_shutdown()
    await asyncio.wait_for(task, 5)
    events = await stores.events.read("s1")
    compacted = [e for e in events if e.type == "context_compacted"]
    assert compacted, "a 12k-token budget must force compaction"
    assert compacted[0].event.data["usage_after"] < compacted[0].event.data["usage_before"]
    stored = (await stores.conversations.load("queen:s1")).messages
    assert is_paired(stored)
    assert "[Context compacted." in stored[0]["content"]
    assert "message 0" in stored[0]["content"]   # the current task is restated
