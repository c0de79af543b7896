"""AgentLoop driven by scripted models on in-memory storage (SPEC B 3, acceptance 29-32, 35, 39)."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import replace

import pytest
from loop_harness import FakeTool, LoopRun, blocking_tool, crashable_stores

from apiary.agent.restore import INTERRUPTED_RESULT
from apiary.agent.state import QUEEN_LOOP, LoopConfig, RetryPolicy
from apiary.agent.tool_calls import CANCELLED_RESULT
from apiary.core.errors import ProviderError, ProviderRateLimited, ProviderUnavailable
from apiary.llm.base import ModelRequest
from apiary.llm.demo import DemoLLM
from apiary.llm.fake import FunctionLLM, ScriptedLLM, Turn
from apiary.storage.memory import MemoryStores
from apiary.tools.workspace import workspace_tools

STAMP = r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}[^\]]*\]"
FAST_RETRY = replace(QUEEN_LOOP, retry=RetryPolicy(max_retries=2, base_s=0.001, max_s=0.001))


def types_of(events) -> list[str]:
    return [e.type for e in events]


def paired(events) -> tuple[list[str], list[str]]:
    started = [e.event.data["tool_use_id"] for e in events if e.type == "tool_call_started"]
    completed = [e.event.data["tool_use_id"] for e in events if e.type == "tool_call_completed"]
    return started, completed


def assert_calls_closed(messages) -> None:
    """Every tool call in the conversation has exactly one tool result."""
    call_ids = [c["id"] for m in messages for c in m.get("tool_calls") or []]
    result_ids = [m["tool_use_id"] for m in messages if m["role"] == "tool"]
    assert sorted(call_ids) == sorted(result_ids)
    assert len(set(result_ids)) == len(result_ids)


# -- parking and waking (acceptance 29, 30) ------------------------------------------------------

async def test_text_only_turn_parks_and_requests_input(run_loop):
    llm = ScriptedLLM([Turn("Hi there, friend")])
    run = run_loop(llm, initial=["hello"])
    await run.wait_for("client_input_requested")
    kinds = types_of(await run.events())
    assert kinds[:3] == ["node_loop_started", "node_loop_iteration", "context_usage_updated"]
    assert kinds[-2:] == ["llm_turn_complete", "client_input_requested"]
    deltas = await run.events("client_output_delta")
    assert deltas[-1].event.data["snapshot"] == "Hi there, friend"
    assert "".join(d.event.data["content"] for d in deltas) == "Hi there, friend"
    assert all(d.event.data["iteration"] == 1 for d in deltas)
    assert len(llm.requests) == 1
    assert [(m["role"], m["content"]) for m in await run.messages()] == [("user", "hello"),
                                                                         ("assistant", "Hi there, friend")]
    cursor = (await run.stores.conversations.load(run.ctx.owner)).cursor
    assert cursor["pending_input"] == {"questions": None, "emit_client_request": True}


async def test_wakeup_with_nothing_queued_runs_no_turn(run_loop):
    llm = ScriptedLLM([Turn("first"), Turn("second")])
    run = run_loop(llm, initial=["hello"])
    await run.wait_for("client_input_requested")
    for _ in range(3):          # spurious wake-ups: nothing in the inbox
        run.ctx.wake.set()
        for _ in range(20):
            await asyncio.sleep(0)
    assert len(llm.requests) == 1
    mark = await run.last_id()
    run.say("now something")
    await run.wait_for("llm_turn_complete", after=mark)
    assert len(llm.requests) == 2     # only the real input ran a turn
    assert len(await run.events("node_loop_iteration")) == 2
    assert [m["content"] for m in await run.messages()][-1] == "second"


async def test_queen_context_reaches_model_as_external_event(run_loop):
    llm = ScriptedLLM([Turn("ok"), Turn("noted")])
    run = run_loop(llm, initial=["hello"])
    await run.wait_for("client_input_requested")
    mark = await run.last_id()
    run.say("build finished", kind="event")
    await run.wait_for("client_input_requested", after=mark)
    last_user = llm.requests[-1].messages[-1]
    assert last_user["role"] == "user"
    assert re.fullmatch(STAMP + r" \[External event\] build finished", last_user["content"])
    assert "is_client_input" not in last_user
    assert not await run.events("client_input_received")


async def test_client_input_is_stamped_and_flagged(run_loop):
    llm = ScriptedLLM([Turn("ok"), Turn("fine")])
    run = run_loop(llm, initial=["hello"])
    await run.wait_for("client_input_requested")
    mark = await run.last_id()
    run.say("how are you")
    await run.wait_for("client_input_requested", after=mark)
    last_user = llm.requests[-1].messages[-1]
    assert re.fullmatch(STAMP + " how are you", last_user["content"])
    assert last_user["is_client_input"] is True


async def test_messages_arriving_during_a_turn_wait_for_the_next_one(run_loop):
    llm = ScriptedLLM([Turn("one two three four", delay_s=0.02), Turn("second answer")])
    run = run_loop(llm, initial=["hello"])
    await run.wait_for("client_output_delta")
    run.say("while you talk")
    await run.wait_for("llm_turn_complete", count=2)
    assert len(llm.requests) == 2
    second = llm.requests[1].messages
    assert second[-2]["content"] == "one two three four"
    assert second[-1]["content"].endswith("while you talk")


# -- restore (acceptance 31) ---------------------------------------------------------------------

async def test_restored_parked_queen_runs_no_turn_and_requests_input_again(run_loop):
    stores = MemoryStores()
    first = run_loop(ScriptedLLM([Turn("hello back")]), stores=stores, initial=["hello"])
    await first.wait_for("client_input_requested")
    await first.stop()
    mark = await first.last_id()

    llm = ScriptedLLM([Turn("after restart")])
    second = run_loop(llm, stores=stores)
    requested = await second.wait_for("client_input_requested", after=mark)
    assert len(requested) == 1
    assert llm.requests == []
    assert "node_loop_iteration" not in types_of(await second.events(after=mark))
    second.say("again")
    await second.wait_for("llm_turn_complete", after=mark)
    assert [m["content"] for m in llm.requests[0].messages][:2] == ["hello", "hello back"]
    iterations = [e.event.data["iteration"] for e in await second.events("node_loop_iteration")]
    assert iterations == [1, 2]    # the iteration count goes on, never back


async def test_queen_killed_mid_stream_comes_back_parked_with_the_partial_truncated(run_loop):
    stores = crashable_stores()
    words = " ".join(f"w{i}" for i in range(40))
    first = run_loop(ScriptedLLM([Turn(words, delay_s=0.01)]), stores=stores, initial=["hello"])
    await first.wait_for("client_output_delta", count=3)   # the first delta saves a partial
    stores.conversations.frozen = True  # the process dies here: nothing more reaches storage
    await first.kill()
    stores.conversations.frozen = False
    mark = await first.last_id()

    llm = ScriptedLLM([Turn("resumed")])
    second = run_loop(llm, stores=stores)
    await second.wait_for("client_input_requested", after=mark)
    assert llm.requests == []           # parked: no turn without input
    messages = await second.messages()
    assert messages[-1]["role"] == "assistant"
    assert messages[-1]["truncated"] is True
    assert words.startswith(messages[-1]["content"])
    assert messages[-1]["content"]
    assert (await stores.conversations.load(second.ctx.owner)).partials == {}


async def test_crash_during_a_tool_call_leaves_one_stub_result(run_loop):
    stores = crashable_stores()
    block = blocking_tool()
    first = run_loop(ScriptedLLM([Turn("using it", tool_calls=[("block", {})])]), stores=stores,
                     initial=["go"], tools=[block])
    await first.wait_for("tool_call_started")
    stores.conversations.frozen = True
    await first.kill()
    stores.conversations.frozen = False

    second = run_loop(ScriptedLLM([]), stores=stores, tools=[block])
    await second.wait_for("client_input_requested", after=await first.last_id())
    messages = await second.messages()
    assert_calls_closed(messages)
    assert messages[-1]["role"] == "tool"
    assert messages[-1]["content"] == INTERRUPTED_RESULT
    assert messages[-1]["is_error"] is True


# -- cancelling (acceptance 32, 35) --------------------------------------------------------------

async def test_cancel_mid_stream_keeps_partial_truncated_and_parks(run_loop):
    words = " ".join(f"w{i}" for i in range(200))
    llm = ScriptedLLM([Turn(words, delay_s=0.01), Turn("next answer")])
    run = run_loop(llm, initial=["hello"])
    await run.wait_for("client_output_delta", count=3)
    assert run.loop.cancel_current_turn() is True
    parked = await run.wait_for("client_input_requested")
    last_delta = (await run.events("client_output_delta"))[-1]
    assert last_delta.id < parked[0].id
    messages = await run.messages()
    assert messages[-1] == {**messages[-1], "role": "assistant", "truncated": True,
                            "content": last_delta.event.data["snapshot"]}
    assert not await run.events("llm_turn_complete")      # the cancelled turn did not complete
    assert not run.task.done()                            # the queen herself goes on
    assert run.loop.cancel_current_turn() is False        # idle: nothing to cancel
    run.say("and now?")
    await run.wait_for("llm_turn_complete")
    sent = llm.requests[-1].messages
    assert sent[-2]["truncated"] is True
    assert sent[-1]["content"].endswith("and now?")


async def test_cancel_during_tools_gives_every_started_call_one_result(run_loop):
    block = blocking_tool()
    echo = FakeTool("echo")
    calls = [("echo", {"x": 1}), ("block", {}), ("echo", {"x": 2})]
    llm = ScriptedLLM([Turn("working", tool_calls=calls)])
    run = run_loop(llm, initial=["go"], tools=[block, echo])
    await run.wait_for("tool_call_started", count=3)
    await run.wait_for("tool_call_completed")             # the first echo finished
    assert run.loop.cancel_current_turn() is True
    await run.wait_for("client_input_requested")
    events = await run.events()
    started, completed = paired(events)
    assert len(started) == 3
    assert sorted(completed) == sorted(started)           # exactly one each
    results = {e.event.data["tool_use_id"]: e.event.data["result"] for e in events
               if e.type == "tool_call_completed"}
    assert results[started[1]] == CANCELLED_RESULT
    assert results[started[2]] == CANCELLED_RESULT
    assert echo.calls == [{"x": 1}]                        # the last call never ran
    assert_calls_closed(await run.messages())


async def test_cancelled_turn_then_restart_keeps_pairs(run_loop):
    """35 across a stop: cancel, shut down, restore; still one result per call."""
    stores = MemoryStores()
    block = blocking_tool()
    first = run_loop(ScriptedLLM([Turn("", tool_calls=[("block", {}), ("block", {"again": True})])]),
                     stores=stores, initial=["go"], tools=[block])
    await first.wait_for("tool_call_started", count=2)
    await first.kill()
    second = run_loop(ScriptedLLM([]), stores=stores, tools=[block])
    await second.wait_for("client_input_requested", after=await first.last_id())
    started, completed = paired(await second.events())
    assert len(started) == 2 and sorted(started) == sorted(completed)
    assert_calls_closed(await second.messages())


# -- tools ---------------------------------------------------------------------------------------

async def test_tool_timeout_gives_an_error_result(run_loop):
    async def slow(args):
        await asyncio.sleep(30)
        return "late"

    config = replace(QUEEN_LOOP, tool_call_timeout_seconds=0.05)
    llm = ScriptedLLM([Turn("", tool_calls=[("slow", {})]), Turn("it timed out")])
    run = run_loop(llm, initial=["go"], tools=[FakeTool("slow", slow)], config=config)
    [done] = await run.wait_for("tool_call_completed")
    assert done.event.data["result"] == "Tool 'slow' timed out after 0.05s"
    assert done.event.data["is_error"] is True
    await run.wait_for("llm_turn_complete")
    tool_msg = llm.requests[1].messages[-1]
    assert tool_msg["role"] == "tool" and tool_msg["is_error"] is True


async def test_unknown_tool_gives_an_error_result(run_loop):
    llm = ScriptedLLM([Turn("", tool_calls=[("nope", {"a": 1})]), Turn("sorry")])
    run = run_loop(llm, initial=["go"])
    [done] = await run.wait_for("tool_call_completed")
    assert done.event.data == {**done.event.data, "tool_name": "nope", "result": "Unknown tool 'nope'",
                               "is_error": True}
    await run.wait_for("client_input_requested")
    assert_calls_closed(await run.messages())


async def test_tool_result_reaches_the_next_model_call(run_loop):
    echo = FakeTool("echo")
    llm = ScriptedLLM([Turn("calling", tool_calls=[("echo", {"v": "x"})]), Turn("done")])
    run = run_loop(llm, initial=["go"], tools=[echo])
    await run.wait_for("llm_turn_complete")
    [started] = await run.events("tool_call_started")
    assert started.event.data["tool_input"] == {"v": "x"}
    second = llm.requests[1].messages
    assert second[-2]["role"] == "assistant"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "echo"
    assert second[-1] == {**second[-1], "role": "tool", "content": "echo {'v': 'x'}",
                          "tool_use_id": started.event.data["tool_use_id"]}


async def test_ask_user_parks_and_the_answer_is_the_tool_result(run_loop):
    question = {"questions": [{"id": "q1", "prompt": "Which one?", "options": ["A", "B"]}]}
    llm = ScriptedLLM([Turn("let me ask", tool_calls=[("ask_user", question)]), Turn("thanks")])
    run = run_loop(llm, initial=["go"])
    [asked] = await run.wait_for("client_input_requested")
    assert asked.event.data["questions"][0]["prompt"] == "Which one?"
    assert not await run.events("tool_call_completed")
    run.say("B")
    [done] = await run.wait_for("tool_call_completed")
    assert done.event.data["result"] == "B"
    await run.wait_for("client_input_requested", count=2)


# -- model errors --------------------------------------------------------------------------------

def failing_then(errors: list[Exception], turn: Turn) -> FunctionLLM:
    pending = list(errors)

    def respond(request: ModelRequest) -> Turn:
        return Turn(error=pending.pop(0)) if pending else turn

    return FunctionLLM(respond)


async def test_retryable_error_is_retried_with_node_retry(run_loop):
    llm = failing_then([ProviderUnavailable("upstream 503"), ProviderUnavailable("upstream 503")], Turn("ok now"))
    run = run_loop(llm, initial=["hello"], config=FAST_RETRY)
    await run.wait_for("client_input_requested")
    retries = await run.events("node_retry")
    assert [r.event.data["retry_count"] for r in retries] == [1, 2]
    assert all(r.event.data["max_retries"] == 2 for r in retries)
    assert "upstream 503" in retries[0].event.data["error"]
    assert len(llm.requests) == 3
    assert (await run.messages())[-1]["content"] == "ok now"


async def test_rate_limit_retries_are_capacity_waits(run_loop):
    llm = failing_then([ProviderRateLimited("429 slow down")], Turn("ok"))
    run = run_loop(llm, initial=["hello"], config=FAST_RETRY)
    await run.wait_for("client_input_requested")
    [retry] = await run.events("node_retry")
    assert retry.event.data["max_retries"] == -1


async def test_permanent_error_is_streamed_as_the_reply_and_the_queen_parks(run_loop):
    llm = failing_then([ProviderError("invalid api key", retryable=False)], Turn("recovered"))
    run = run_loop(llm, initial=["hello"], config=FAST_RETRY)
    await run.wait_for("client_input_requested")
    text = "[Error: LLM call failed: invalid api key. Please try again.]"
    assert not await run.events("node_retry")
    assert (await run.events("client_output_delta"))[-1].event.data["snapshot"] == text
    assert (await run.messages())[-1] == {**(await run.messages())[-1], "role": "assistant", "content": text}
    assert not run.task.done()
    run.say("try again")
    await run.wait_for("client_input_requested", count=2)
    assert (await run.messages())[-1]["content"] == "recovered"


async def test_retries_exhausted_the_queen_reports_and_parks(run_loop):
    errors = [ProviderUnavailable("still down") for _ in range(3)]
    llm = failing_then(errors, Turn("back"))
    run = run_loop(llm, initial=["hello"], config=FAST_RETRY)
    await run.wait_for("client_input_requested")
    assert len(await run.events("node_retry")) == 2
    assert "LLM call failed: still down" in (await run.messages())[-1]["content"]
    assert not run.task.done()


# -- detectors -----------------------------------------------------------------------------------

async def test_doom_loop_is_published_and_the_queen_parks(run_loop):
    echo = FakeTool("echo")

    def respond(request: ModelRequest) -> Turn:
        if request.messages[-1]["role"] == "tool":
            return Turn("done with that")
        return Turn("", tool_calls=[("echo", {"same": True})])

    llm = FunctionLLM(respond)
    run = run_loop(llm, initial=["go"], tools=[echo])
    [doom] = await run.wait_for("node_tool_doom_loop")
    await run.wait_for("client_input_requested")
    assert doom.event.data["description"]
    assert len(echo.calls) == 3
    assert len(await run.events("node_loop_iteration")) == 3
    assert any(m.get("is_system_nudge") and "repeated" in m["content"] for m in await run.messages())


async def test_text_only_turn_clears_the_doom_window(run_loop):
    echo = FakeTool("echo")
    script = [Turn("", tool_calls=[("echo", {"a": 1})]), Turn("t1"), Turn("", tool_calls=[("echo", {"a": 1})]),
              Turn("t2"), Turn("plain text only"),
              Turn("", tool_calls=[("echo", {"a": 1})]), Turn("t3")]
    run = run_loop(ScriptedLLM(script), initial=["go"], tools=[echo])
    await run.wait_for("client_input_requested")
    mark = await run.last_id()
    run.say("continue")
    await run.wait_for("client_input_requested", after=mark)
    assert len(echo.calls) == 3
    assert not await run.events("node_tool_doom_loop")


# -- the demo model (acceptance 39) --------------------------------------------------------------

@pytest.fixture
def no_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def demo_run(run_loop, tmp_path, **kwargs) -> LoopRun:
    return run_loop(DemoLLM(), tools=workspace_tools(allow_commands=False), workspace=tmp_path, **kwargs)


async def test_demo_chat_streams_deltas_and_completes_offline(run_loop, tmp_path, no_sockets):
    run = demo_run(run_loop, tmp_path, greet=True)
    await run.wait_for("client_input_requested")
    mark = await run.last_id()
    run.say("tell me about bees")
    await run.wait_for("client_input_requested", after=mark)
    kinds = types_of(await run.events(after=mark))
    assert kinds.count("client_output_delta") > 3
    assert kinds.index("llm_turn_complete") > kinds.index("client_output_delta")
    snapshot = (await run.events("client_output_delta"))[-1].event.data["snapshot"]
    assert "demo model" in snapshot and "tell me about bees" in snapshot
    [_, complete] = await run.events("llm_turn_complete")
    assert complete.event.data["model"] == "demo"
    assert complete.event.data["output_tokens"] == len(snapshot) // 4


async def test_demo_tool_directive_calls_the_tool(run_loop, tmp_path, no_sockets):
    (tmp_path / "x").write_text("file body")
    run = demo_run(run_loop, tmp_path, initial=['demo:tool read_file {"path": "x"}'])
    [started] = await run.wait_for("tool_call_started")
    assert started.event.data["tool_name"] == "read_file"
    assert started.event.data["tool_input"] == {"path": "x"}
    [done] = await run.wait_for("tool_call_completed")
    assert done.event.data["is_error"] is False and "file body" in done.event.data["result"]
    await run.wait_for("client_input_requested")
    replies = [m["content"] for m in await run.messages() if m["role"] == "assistant"]
    assert any(r.startswith("[demo model] The tool answered: ") and "file body" in r for r in replies)


async def test_demo_ask_and_fail_directives(run_loop, tmp_path, no_sockets):
    run = demo_run(run_loop, tmp_path, initial=["demo:ask Ship it today?"])
    [asked] = await run.wait_for("client_input_requested")
    assert asked.event.data["questions"][0]["prompt"] == "Ship it today?"
    assert asked.event.data["questions"][0]["options"] == ["Yes", "No"]
    run.say("Yes")
    await run.wait_for("client_input_requested", count=2)
    mark = await run.last_id()
    run.say("demo:fail boom")
    await run.wait_for("client_input_requested", after=mark)
    text = "[Error: LLM call failed: demo:fail boom. Please try again.]"
    assert (await run.messages())[-1]["content"] == text


async def test_demo_model_is_deterministic(run_loop, tmp_path, no_sockets):
    snapshots = []
    for _ in range(2):
        run = demo_run(run_loop, tmp_path, initial=["same words each time"])
        await run.wait_for("client_input_requested")
        snapshots.append((await run.events("client_output_delta"))[-1].event.data["snapshot"])
        await run.stop()
    assert snapshots[0] == snapshots[1]


async def test_demo_worker_completes_with_set_output(run_loop, tmp_path, no_sockets):
    run = demo_run(run_loop, tmp_path, role="worker", config=LoopConfig(), initial=["Goal: count the bees"])
    outcome = await asyncio.wait_for(run.task, 10)
    assert outcome.status == "completed"
    assert outcome.outputs == {"result": "demo result for: Goal: count the bees"}
    kinds = types_of(await run.events())
    assert "llm_text_delta" in kinds and "client_output_delta" not in kinds
    assert kinds[-1] == "node_loop_completed"
