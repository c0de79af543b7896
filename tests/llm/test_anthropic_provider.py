"""AnthropicProvider against a real local HTTP server speaking the Messages wire format."""

from __future__ import annotations

from typing import Any

import pytest
from fake_servers import FakeLLMServer, FakeToolCall, FakeTurn

from apiary.core.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from apiary.core.messages import ToolSpec
from apiary.llm.anthropic import AnthropicProvider, to_anthropic_messages
from apiary.llm.base import Finish, ModelRequest, TextDelta, ToolCallDelta
from apiary.llm.pricing import cost_usd

EPHEMERAL = {"type": "ephemeral"}


def hello() -> ModelRequest:
    return ModelRequest(messages=[{"seq": 1, "role": "user", "content": "hi"}])


def provider_for(server: FakeLLMServer, model: str = "claude-sonnet-4-5", **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(model, api_key="sk-ant-test", base_url=server.anthropic_base_url, **kwargs)


async def collect(provider: AnthropicProvider, request: ModelRequest) -> list[Any]:
    try:
        return [event async for event in provider.stream(request)]
    finally:
        await provider.aclose()


async def test_text_streams_in_order_with_cache_usage(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(
        FakeTurn(
            text=["Hel", "lo", " there"],
            input_tokens=12,
            cached_tokens=30,
            cache_creation_tokens=5,
            output_tokens=7,
        )
    )
    events = await collect(provider_for(fake_llm), hello())
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo"), TextDelta(" there")]
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.stop_reason == "end_turn"
    assert finish.input_tokens == 12 + 30 + 5  # whole prompt, like OpenAI's prompt_tokens
    assert (finish.cached_tokens, finish.cache_creation_tokens, finish.output_tokens) == (30, 5, 7)
    assert finish.model == "claude-sonnet-4-5"
    assert finish.cost_usd == pytest.approx((12 * 3 + 30 * 0.3 + 5 * 3.75 + 7 * 15) / 1_000_000)
    assert finish.cost_usd == pytest.approx(
        cost_usd("claude-sonnet-4-5", 47, 7, cached_tokens=30, cache_creation_tokens=5)
    )


async def test_tool_use_blocks_are_assembled(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(
        FakeTurn(
            text="Checking.",
            tool_calls=[
                FakeToolCall("read_file", {"path": "a.txt", "n": [1, {"k": None}]}, id="toolu_1"),
                FakeToolCall("noop", {}, id="toolu_2"),
            ],
            fragment_size=4,
        )
    )
    events = await collect(provider_for(fake_llm), hello())
    assert events[0] == TextDelta("Checking.")
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta("toolu_1", "read_file", {"path": "a.txt", "n": [1, {"k": None}]}),
        ToolCallDelta("toolu_2", "noop", {}),
    ]
    assert events[-1].stop_reason == "tool_use"


async def test_bad_tool_json_keeps_raw_text(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(tool_calls=[FakeToolCall("run", '{"cmd": ', id="t1")]))
    events = await collect(provider_for(fake_llm), hello())
    assert events[0] == ToolCallDelta("t1", "run", {"_raw_arguments": '{"cmd": '})


async def test_max_tokens_stop_reason(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text="trunc", stop_reason="max_tokens"))
    events = await collect(provider_for(fake_llm), hello())
    assert events[-1].stop_reason == "max_tokens"


async def test_request_translation(fake_llm: FakeLLMServer) -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    jpeg = "data:image/jpeg;base64,/9j/4AAQ"
    call = {"id": "toolu_a", "type": "function", "function": {"name": "ls", "arguments": '{"dir": "/"}'}}
    call_b = {"id": "toolu_b", "type": "function", "function": {"name": "cat", "arguments": "{}"}}
    messages = [
        {
            "seq": 1,
            "role": "user",
            "content": "what is this?",
            "image_content": [
                {"type": "image_url", "image_url": {"url": png}},
                {"type": "image_url", "image_url": {"url": jpeg}},
            ],
        },
        {"seq": 2, "role": "user", "content": "and hurry", "is_client_input": True},
        {"seq": 3, "role": "assistant", "content": "Looking.", "tool_calls": [call, call_b]},
        {"seq": 4, "role": "tool", "content": "bin etc", "tool_use_id": "toolu_a"},
        {"seq": 5, "role": "tool", "content": "no such file", "tool_use_id": "toolu_b", "is_error": True},
        {"seq": 6, "role": "user", "content": "ok?"},
    ]
    tool = ToolSpec("ls", "List a directory", {"type": "object", "properties": {"dir": {"type": "string"}}})
    request = ModelRequest(messages=messages, system="You are terse.", tools=[tool], max_tokens=321)
    await collect(provider_for(fake_llm), request)

    body = fake_llm.last_body
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 321
    assert body["stream"] is True
    assert body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}]
    assert body["tools"] == [
        {"name": "ls", "description": "List a directory", "input_schema": tool.parameters}
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
                {"type": "text", "text": "what is this?"},
                {"type": "text", "text": "and hurry"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_a", "name": "ls", "input": {"dir": "/"}},
                {"type": "tool_use", "id": "toolu_b", "name": "cat", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "bin etc"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_b",
                    "content": "ERROR: no such file",
                    "is_error": True,
                },
                {"type": "text", "text": "ok?", "cache_control": EPHEMERAL},
            ],
        },
    ]
    headers = fake_llm.requests[-1].headers
    # Older SDKs send x-api-key, newer ones a bearer token.
    assert "sk-ant-test" in (
        headers.get("x-api-key"),
        headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert headers["anthropic-version"]


def test_empty_assistant_turns_are_dropped_and_same_roles_merge() -> None:
    wire = to_anthropic_messages(
        [
            {"seq": 1, "role": "user", "content": "a"},
            {"seq": 2, "role": "assistant", "content": ""},
            {"seq": 3, "role": "user", "content": "b"},
        ]
    )
    assert wire == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b", "cache_control": EPHEMERAL},
            ],
        }
    ]


def test_user_note_after_tool_results_goes_last() -> None:
    wire = to_anthropic_messages(
        [
            {
                "seq": 1,
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "t", "function": {"name": "f"}}],
            },
            {"seq": 2, "role": "user", "content": "note"},
            {"seq": 3, "role": "tool", "content": "", "tool_use_id": "t"},
        ]
    )
    assert [b["type"] for b in wire[1]["content"]] == ["tool_result", "text"]
    assert wire[1]["content"][0]["content"] == "(no output)"


async def test_acomplete_collects_the_stream(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text=["A ", "summary."], input_tokens=40, output_tokens=3))
    provider = provider_for(fake_llm)
    try:
        response = await provider.acomplete(ModelRequest(messages=hello().messages, system="Summarise"))
    finally:
        await provider.aclose()
    assert response.content == "A summary."
    assert (response.input_tokens, response.output_tokens, response.stop_reason) == (40, 3, "end_turn")


def test_missing_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        AnthropicProvider("claude-sonnet-4-5", api_key=None)
    assert "ANTHROPIC_API_KEY" in info.value.message
    assert "APIARY_ANTHROPIC_API_KEY" in info.value.message


@pytest.mark.parametrize(
    ("status", "error_class", "retryable"),
    [
        (429, ProviderRateLimited, True),
        (529, ProviderRateLimited, True),
        (500, ProviderUnavailable, True),
        (401, ProviderAuthError, False),
        (403, ProviderAuthError, False),
        (400, ProviderError, False),
        (413, ProviderError, False),
    ],
)
async def test_http_errors_map_to_provider_errors(
    fake_llm: FakeLLMServer, status: int, error_class: type[ProviderError], retryable: bool
) -> None:
    fake_llm.push_error(status, "it broke")
    with pytest.raises(ProviderError) as info:
        await collect(provider_for(fake_llm), hello())
    assert type(info.value) is error_class
    assert info.value.retryable is retryable
    assert info.value.message.startswith(f"Anthropic API error {status}: it broke")
    assert len(fake_llm.requests) == 1  # the SDK must not retry on its own


async def test_auth_error_names_the_setting(fake_llm: FakeLLMServer) -> None:
    fake_llm.push_error(401, "invalid x-api-key")
    with pytest.raises(ProviderAuthError) as info:
        await collect(provider_for(fake_llm), hello())
    assert info.value.message == (
        "Anthropic API error 401: invalid x-api-key (check ANTHROPIC_API_KEY (or APIARY_ANTHROPIC_API_KEY))"
    )


async def test_overloaded_inside_the_stream_is_rate_limited(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text=["so far"], stream_error="overloaded_error", error_message="Overloaded"))
    with pytest.raises(ProviderRateLimited) as info:
        await collect(provider_for(fake_llm), hello())
    assert info.value.message == "Anthropic API error: Overloaded"


async def test_slow_server_times_out(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text="late", delay_s=2.0))
    with pytest.raises(ProviderTimeout):
        await collect(provider_for(fake_llm, timeout_s=0.3), hello())


async def test_shared_http_client_is_left_open(fake_llm: FakeLLMServer) -> None:
    httpx2 = pytest.importorskip("httpx2")  # anthropic>=2 only takes httpx2 clients
    async with httpx2.AsyncClient() as shared:
        events = await collect(provider_for(fake_llm, http_client=shared), hello())
        assert events[0] == TextDelta("ok")
        assert not shared.is_closed
