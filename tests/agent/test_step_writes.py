"""What one loop step writes: a response that arrives at once is stored without a partial first, deltas
stay one event each (in order, before what follows them) however they are batched into the log, and
the running token estimate matches a full count."""

from __future__ import annotations

import random

from loop_harness import FakeTool

from apiary.agent.context_budget import estimate_tokens
from apiary.agent.state import RunState
from apiary.core.messages import JsonObject
from apiary.llm.fake import ScriptedLLM, Turn
from apiary.storage.memory import MemoryConversationStore, MemoryStores


class CountingConversations(MemoryConversationStore):
    def __init__(self) -> None:
        super().__init__()
        self.partials_saved: list[str] = []

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        if partial is not None:
            self.partials_saved.append(partial["content"])
        await super().put_partial(owner, seq, partial)


def counting_stores() -> tuple[MemoryStores, CountingConversations]:
    stores = MemoryStores()
    stores.conversations = conv = CountingConversations()
    return stores, conv


async def test_a_response_arriving_at_once_writes_no_partial(run_loop):
    stores, conv = counting_stores()
    words = " ".join(f"w{i}" for i in range(30))
    run = run_loop(ScriptedLLM([Turn(words)]), stores=stores, initial=["hello"])
    await run.wait_for("client_input_requested")
    assert conv.partials_saved == []
    deltas = await run.events("client_output_delta")
    assert [d.event.data["content"] for d in deltas] == [w if i == 0 else " " + w
                                                         for i, w in enumerate(words.split(" "))]
    assert [d.event.data["snapshot"] for d in deltas][-1] == words
    kinds = [e.type for e in await run.events()]
    assert kinds.index("llm_turn_complete") > max(i for i, k in enumerate(kinds) if k == "client_output_delta")
    assert (await run.messages())[-1]["content"] == words


async def test_a_slow_stream_keeps_its_partial_saved(run_loop):
    stores, conv = counting_stores()
    words = " ".join(f"w{i}" for i in range(6))
    run = run_loop(ScriptedLLM([Turn(words, delay_s=0.01)]), stores=stores, initial=["hello"])
    await run.wait_for("client_input_requested")
    assert conv.partials_saved and words.startswith(conv.partials_saved[0])
    assert (await stores.conversations.load(run.ctx.owner)).partials == {}   # cleared with the message


async def test_deltas_come_before_the_tool_events(run_loop):
    tool = FakeTool("echo")
    run = run_loop(ScriptedLLM([Turn("calling it now", tool_calls=[("echo", {"a": 1}), ("echo", {"a": 2})]),
                                Turn("done")]), initial=["go"], tools=[tool])
    await run.wait_for("client_input_requested")
    kinds = [e.type for e in await run.events()]
    first_tool = kinds.index("tool_call_started")
    assert kinds[first_tool:first_tool + 2] == ["tool_call_started", "tool_call_started"]
    assert "client_output_delta" in kinds[:first_tool]
    assert tool.calls == [{"a": 1}, {"a": 2}]
    recorded = await run.stores.recordings.get_run(run.ctx.owner, "run1")
    assert {k for _, k in recorded} >= {"model:0", "model:1", "call:call_1_0", "tool:call_1_0", "tool:call_1_1"}


def test_running_token_estimate_matches_a_full_count():
    rng = random.Random(3)
    state = RunState()
    for seq in range(200):
        msg: JsonObject = {"seq": seq, "role": "user", "content": "x" * rng.randint(0, 300)}
        if rng.random() < 0.2:
            msg["tool_calls"] = [{"id": str(seq)}]
        state.messages.append(msg)
        if rng.random() < 0.3:
            assert state.estimated_tokens("system") == estimate_tokens(state.messages, "system")
        if rng.random() < 0.02:   # compaction replaces the list
            state.messages = state.messages[len(state.messages) // 2:]
    assert state.estimated_tokens() == estimate_tokens(state.messages)
    state.messages[-1] = {"seq": 999, "role": "user", "content": "y" * 5000}   # replaced in place
    assert state.estimated_tokens() == estimate_tokens(state.messages)


async def test_on_sqlite_a_responses_deltas_and_its_message_share_one_commit(run_loop, tmp_path, monkeypatch):
    """The deltas are posted, not awaited: on SQLite they go out in the same transaction as the
    response message written after them (one writer), still before it and before every later event."""
    from apiary.storage.sqlite import writer as writer_mod
    from apiary.storage.sqlite.events import _Append
    from apiary.storage.sqlite.stores import SqliteStores

    batches: list[list[str]] = []
    run_batch = writer_mod._run_batch

    def recording(conn, writes):
        batches.append([",".join(e.type for e in w.events) if isinstance(w, _Append)
                        else " | ".join(sql for sql, _ in w.statements) for w in writes])
        return run_batch(conn, writes)

    monkeypatch.setattr(writer_mod, "_run_batch", recording)
    stores = await SqliteStores.open(tmp_path / "apiary.db")
    assert stores.events.orders_before(stores.conversations)
    try:
        words = " ".join(f"w{i}" for i in range(12))
        run = run_loop(ScriptedLLM([Turn(words)]), stores=stores, initial=["hello"])
        await run.wait_for("client_input_requested")
        together = [b for b in batches if any("client_output_delta" in w for w in b)]
        assert together, batches
        last = together[-1]
        deltas_at = max(i for i, w in enumerate(last) if "client_output_delta" in w)
        assert any("conv_messages" in w for w in last[deltas_at + 1:]), last   # the message, in the same commit
        kinds = [e.type for e in await run.events()]
        assert kinds.index("llm_turn_complete") > max(i for i, k in enumerate(kinds) if k == "client_output_delta")
        assert (await run.messages())[-1]["content"] == words
        await run.stop()
    finally:
        await stores.aclose()


async def test_where_the_log_keeps_no_common_order_flush_waits_for_the_deltas(run_loop):
    stores, _ = counting_stores()
    assert not stores.events.orders_before(stores.conversations)
    seen_at_message: list[int] = []
    append = stores.conversations.append_message

    async def noting(owner, message):
        if message["role"] == "assistant":
            seen_at_message.append(len([e for e in await stores.events.read("s1")
                                        if e.type == "client_output_delta"]))
        await append(owner, message)

    stores.conversations.append_message = noting   # type: ignore[method-assign]
    run = run_loop(ScriptedLLM([Turn("a b c d")]), stores=stores, initial=["hello"])
    await run.wait_for("client_input_requested")
    assert seen_at_message and seen_at_message[0] == 4   # all four deltas stored before the message
