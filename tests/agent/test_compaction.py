"""Model compaction (SPEC B 9): rendering, the recursive split, user messages kept verbatim, facts block."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiary.agent.compaction import facts_block, render, split_index, summarise, summary_message, user_messages
from apiary.core.errors import ProviderError
from apiary.core.messages import ToolCall, make_message
from apiary.llm.base import ModelRequest, ModelResponse
from apiary.llm.demo import DemoLLM

U_LINE = re.compile(r"^\[U\d+\] .*$", re.MULTILINE)
MARK = re.compile(r"\bm(\d+)\b")


class Recorder:
    """A one-shot model that records every request and answers with a short numbered text."""

    model = "recorder"
    supports_images = False

    def __init__(self, *, fail: Any = None, reply: str | None = None) -> None:
        self.requests: list[ModelRequest] = []
        self.fail = fail
        self.reply = reply

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if self.fail is not None:
            error = self.fail(request)
            if error is not None:
                raise error
        return ModelResponse(content=self.reply or f"part {len(self.requests)}", model=self.model)

    def chunks(self) -> list[list[int]]:
        """The message seqs each request summarised (contents are tagged ``m<seq>``)."""
        return [[int(x) for x in MARK.findall(r.messages[0]["content"])] for r in self.requests]


def call(call_id: str, name: str, **args: Any) -> dict[str, Any]:
    return ToolCall(call_id, name, args).to_wire()


def user(seq: int, text: str, **extra: Any) -> dict[str, Any]:
    return make_message(seq, "user", text, **extra)


def assistant(seq: int, text: str, *calls: dict[str, Any]) -> dict[str, Any]:
    return make_message(seq, "assistant", text, tool_calls=list(calls))


def tool(seq: int, call_id: str, text: str, *, is_error: bool = False) -> dict[str, Any]:
    return make_message(seq, "tool", text, tool_use_id=call_id, is_error=is_error)


def pairs_in(messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(seq of the call, seq of the result) for every result whose call is in ``messages``."""
    where = {c["id"]: m["seq"] for m in messages for c in m.get("tool_calls") or []}
    return [(where[m["tool_use_id"]], m["seq"]) for m in messages
            if m["role"] == "tool" and m.get("tool_use_id") in where]


# -- rendering and the request -------------------------------------------------------------------


def test_render_shortens_tool_results_and_tool_calls_and_hides_images():
    messages = [
        user(0, "look at this",
             image_content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
        assistant(1, "a" * 300, call("c1", "read_file", path="x"), call("c2", "search_files", pattern="y")),
        tool(2, "c1", "r" * 900),
    ]
    text = render(messages)
    assert "[image]" in text and "base64" not in text
    assert f"[assistant]: {'a' * 200} (tools: read_file, search_files)" in text
    assert "a" * 201 not in text
    assert f"[tool]: {'r' * 500}" in text and "r" * 501 not in text
    assert text.startswith("[user]: look at this")


async def test_one_call_asks_for_sections_and_sets_max_tokens():
    llm = Recorder()
    await summarise(llm, [user(0, "hi"), assistant(1, "hello")], max_context_tokens=180_000)
    (request,) = llm.requests
    assert request.max_tokens == 90_000
    assert "about 360000 characters" in request.system
    for section in ("Primary request and intent", "Key technical concepts", "Files and code", "Errors and fixes",
                    "Problem solving", "User messages", "Pending tasks", "Current work"):
        assert section in request.system
    assert "Keep rules, constraints and identity details verbatim." in request.system
    assert not U_LINE.search(request.system)
    assert request.messages[0]["content"] == "[user]: hi\n\n[assistant]: hello"
    small = Recorder()
    await summarise(small, [user(0, "hi")], max_context_tokens=1000)
    assert small.requests[0].max_tokens == 1024


# -- user messages kept verbatim, in order -------------------------------------------------------


async def test_demo_model_keeps_user_messages_in_order():
    messages = [user(0, "first ask"), assistant(1, "ok"), user(2, "[nudge] keep going", is_system_nudge=True),
                user(3, "second ask"), user(4, "an older summary", inherited_from="s0"), user(5, "third ask")]
    summary = await summarise(DemoLLM(), messages, preserve_user_messages=True)
    assert U_LINE.findall(summary) == ["[U1] first ask", "[U2] second ask", "[U3] third ask"]
    assert user_messages(messages) == ["first ask", "second ask", "third ask"]


async def test_labels_go_on_counting_across_a_split():
    messages = []
    for i in range(6):
        messages += [user(2 * i, f"ask number {i}"), assistant(2 * i + 1, "x" * 50)]
    llm = DemoLLM(keep_requests=True)
    summary = await summarise(llm, messages, preserve_user_messages=True, char_limit=150)
    assert len(llm.requests) > 1   # it did split
    assert U_LINE.findall(summary) == [f"[U{i + 1}] ask number {i}" for i in range(6)]


WORDS = st.from_regex(r"[a-z]{1,8}( [a-z]{1,8}){0,3}", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns=st.lists(st.tuples(WORDS, st.integers(0, 120), st.booleans()), min_size=1, max_size=14),
       limit=st.integers(20, 400))
async def test_every_user_message_survives_any_split(turns, limit):
    messages: list[dict[str, Any]] = []
    for text, pad, with_tool in turns:
        messages.append(user(len(messages), text))
        if with_tool:
            cid = f"c{len(messages)}"
            messages.append(assistant(len(messages), "y" * pad, call(cid, "read_file", path=text)))
            messages.append(tool(len(messages), cid, "z" * pad))
        else:
            messages.append(assistant(len(messages), "y" * pad))
    summary = await summarise(DemoLLM(), messages, preserve_user_messages=True, char_limit=limit)
    assert U_LINE.findall(summary) == [f"[U{i}] {t}" for i, (t, _, _) in enumerate(turns, start=1)]


# -- the split never separates a tool call from its results ------------------------------------


async def test_split_keeps_a_trailing_tool_group_with_its_call():
    messages = [user(0, "m0"), assistant(1, "m1", call("a", "read_file"), call("b", "read_file")),
                tool(2, "a", "m2"), tool(3, "b", "m3")]
    assert split_index(messages) == 1
    llm = Recorder()
    await summarise(llm, messages, char_limit=10)
    assert llm.chunks() == [[0], [1, 2, 3]]


async def test_unsplittable_conversation_is_summarised_in_one_call():
    messages = [assistant(0, "m0", call("a", "run_command")), tool(1, "a", "m1 " + "x" * 100)]
    assert split_index(messages) is None
    llm = Recorder()
    await summarise(llm, messages, char_limit=10)
    assert llm.chunks() == [[0, 1]]


def test_split_index_respects_a_result_appended_much_later():
    # A result stored after other messages (e.g. an interrupted call closed on restore) still binds:
    # the middle cuts 3, 4 and 5 would leave call "a" and its result apart.
    messages = [user(0, "m0"), user(1, "m1"), assistant(2, "m2", call("a", "x")), user(3, "m3"), assistant(4, "m4"),
                tool(5, "a", "m5"), user(6, "m6")]
    assert split_index(messages) == 2


@st.composite
def conversations(draw: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    late: list[str] = []
    for kind in draw(st.lists(st.sampled_from(["user", "text", "tools", "late"]), min_size=1, max_size=24)):
        seq = len(messages)
        pad = "x" * draw(st.integers(0, 60))
        if kind == "user":
            messages.append(user(seq, f"m{seq} {pad}"))
        elif kind == "text":
            messages.append(assistant(seq, f"m{seq} {pad}"))
        else:
            n = draw(st.integers(1, 3))
            ids = [f"c{seq}_{k}" for k in range(n)]
            messages.append(assistant(seq, f"m{seq} {pad}", *(call(i, "read_file", path=pad) for i in ids)))
            if kind == "late":   # its results come at the very end
                late += ids
                continue
            for i in draw(st.permutations(ids)):
                messages.append(tool(len(messages), i, f"m{len(messages)} {pad}"))
    for i in late:
        messages.append(tool(len(messages), i, f"m{len(messages)} interrupted"))
    return messages


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), limit=st.integers(1, 300))
async def test_recursive_split_never_separates_calls_from_results(messages, limit):
    llm = Recorder()
    summary = await summarise(llm, messages, char_limit=limit)
    chunks = llm.chunks()
    # The chunks cover the conversation once, in order, as contiguous pieces.
    assert [s for chunk in chunks for s in chunk] == [m["seq"] for m in messages]
    chunk_of = {s: i for i, chunk in enumerate(chunks) for s in chunk}
    for call_seq, result_seq in pairs_in(messages):
        assert chunk_of[call_seq] == chunk_of[result_seq]
    assert summary.count("TOOLS ALREADY CALLED:") == 1


@settings(max_examples=80, deadline=None)
@given(messages=conversations())
def test_split_index_is_a_valid_cut(messages):
    cut = split_index(messages)
    pairs = pairs_in(messages)
    valid = [i for i in range(1, len(messages)) if not any(c < i <= r for c, r in pairs)]
    if not valid:
        assert cut is None
    else:
        assert cut in valid
        assert abs(2 * cut - len(messages)) == min(abs(2 * i - len(messages)) for i in valid)


# -- context errors ------------------------------------------------------------------------------


async def test_context_too_large_error_splits_other_errors_propagate():
    messages = [user(i, f"m{i} " + "x" * 40) for i in range(4)]
    too_big = Recorder(fail=lambda r: ProviderError("context length exceeded") if len(r.messages[0]["content"]) > 100
                       else None)
    summary = await summarise(too_big, messages)
    assert too_big.chunks()[0] == [0, 1, 2, 3]
    answered = [c for c, r in zip(too_big.chunks(), too_big.requests, strict=True)
                if len(r.messages[0]["content"]) <= 100]
    assert answered == [[0], [1], [2], [3]]
    assert summary.count("part") == 4
    broken = Recorder(fail=lambda r: ProviderError("invalid api key"))
    with pytest.raises(ProviderError, match="invalid api key"):
        await summarise(broken, messages)
    assert len(broken.requests) == 1


async def test_context_error_on_an_unsplittable_chunk_propagates():
    messages = [assistant(0, "m0", call("a", "x")), tool(1, "a", "m1")]
    llm = Recorder(fail=lambda r: ProviderError("context window exceeded"))
    with pytest.raises(ProviderError):
        await summarise(llm, messages)
    assert len(llm.requests) == 1


# -- the facts block -----------------------------------------------------------------------------


def fact_conversation() -> list[dict[str, Any]]:
    messages = [user(0, "build it")]
    messages.append(assistant(1, "", call("w1", "write_file", path="a.py", content="x"),
                              call("w2", "write_file", path="b.py", content="y")))
    messages += [tool(2, "w1", "ok"), tool(3, "w2", "disk full", is_error=True)]
    messages.append(assistant(4, "", call("e1", "edit_file", path="a.py", old="x", new="z"),
                              call("o1", "set_output", key="result", value="done")))
    messages += [tool(5, "e1", "ok"), tool(6, "o1", "ok")]
    seq = 7
    for i in range(12):
        messages.append(assistant(seq, "", call(f"r{i}", "run_command", command=f"false {i}")))
        messages.append(tool(seq + 1, f"r{i}", f"exit 1 from run {i}", is_error=True))
        seq += 2
    return messages


def test_facts_block_lists_tools_files_outputs_and_last_errors():
    block = facts_block(fact_conversation())
    lines = block.splitlines()
    headers = ["TOOLS ALREADY CALLED:", "FILES SAVED:", "OUTPUTS SET:", "ERRORS (do NOT retry these):"]
    assert [line for line in lines if line in headers] == headers
    tools_part = lines[lines.index(headers[0]) + 1:lines.index(headers[1])]
    assert any(line.startswith("- write_file x2: ") and '"path": "a.py"' in line for line in tools_part)
    assert any(line.startswith("- edit_file x1: ") for line in tools_part)
    assert any(line.startswith("- run_command x12: ") for line in tools_part)
    run_line = next(line for line in tools_part if line.startswith("- run_command"))
    assert run_line.count('"command"') == 3   # a few previews, not all twelve
    assert lines[lines.index(headers[1]) + 1:lines.index(headers[2])] == ["- a.py", "- b.py"]
    assert lines[lines.index(headers[2]) + 1:lines.index(headers[3])] == ["- result"]
    errors = lines[lines.index(headers[3]) + 1:]
    assert len(errors) == 10
    assert errors == [f"- exit 1 from run {i}" for i in range(2, 12)]


async def test_facts_block_appended_once_unless_the_summary_has_it():
    messages = fact_conversation()
    summary = await summarise(Recorder(reply="short summary"), messages)
    assert summary.startswith("short summary\n\nTOOLS ALREADY CALLED:")
    assert summary.endswith(facts_block(messages))
    own = "my summary\nTOOLS ALREADY CALLED:\n- nothing"
    assert await summarise(Recorder(reply=own), messages) == own
    split = await summarise(Recorder(reply="piece"), messages, char_limit=200)
    assert split.count("TOOLS ALREADY CALLED:") == 1
    assert split.endswith(facts_block(messages))


def test_summary_message_shape():
    assert summary_message("s") == {"seq": 0, "role": "user", "content": "s"}
    assert summary_message("s", inherited_from="s1") == {"seq": 0, "role": "user", "content": "s",
                                                         "inherited_from": "s1"}
