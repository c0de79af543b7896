"""OpenAIProvider against a real local HTTP server speaking the Chat Completions wire format."""

from __future__ import annotations

import socket
from typing import Any

import httpx
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
from apiary.llm.base import Finish, ModelRequest, TextDelta, ToolCallDelta
from apiary.llm.openai_compat import (
    OpenAIProvider,
    _ToolCallAssembler,
    max_tokens_field,
    to_openai_messages,
)
from apiary.llm.pricing import cost_usd

PNG = "data:image/png;base64,iVBORw0KGgo="


def hello() -> ModelRequest:
    return ModelRequest(messages=[{"seq": 1, "role": "user", "content": "hi"}])


async def collect(provider: OpenAIProvider, request: ModelRequest) -> list[Any]:
    try:
        return [event async for event in provider.stream(request)]
    finally:
        await provider.aclose()


def provider_for(server: FakeLLMServer, model: str = "gpt-4o", **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(model, api_key="sk-test", base_url=server.openai_base_url, **kwargs)


async def test_text_streams_in_order_then_finish(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text=["Hel", "lo ", "world"], input_tokens=20, output_tokens=3))
    events = await collect(provider_for(fake_llm), hello())
    assert [e.content for e in events if isinstance(e, TextDelta)] == ["Hel", "lo ", "world"]
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert (finish.stop_reason, finish.input_tokens, finish.output_tokens) == ("end_turn", 20, 3)
    assert finish.model == "gpt-4o"
    assert finish.cost_usd == pytest.approx(cost_usd("gpt-4o", 20, 3))
    assert all(not isinstance(e, Finish) for e in events[:-1])


async def test_tool_call_fragments_are_assembled(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(
        FakeTurn(
            text="Let me look.",
            tool_calls=[
                FakeToolCall("read_file", {"path": "/etc/hosts", "lines": [1, 2]}, id="call_a"),
                FakeToolCall("search", {"query": "naïve ünïcode"}, id="call_b"),
            ],
            fragment_size=3,
            cached_tokens=4,
        )
    )
    events = await collect(provider_for(fake_llm), hello())
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls == [
        ToolCallDelta("call_a", "read_file", {"path": "/etc/hosts", "lines": [1, 2]}),
        ToolCallDelta("call_b", "search", {"query": "naïve ünïcode"}),
    ]
    assert isinstance(events[0], TextDelta)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.stop_reason == "tool_use"
    assert finish.cached_tokens == 4


async def test_bad_json_arguments_keep_raw_text(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(tool_calls=[FakeToolCall("run", '{"cmd": "ls', id="c1")]))
    events = await collect(provider_for(fake_llm), hello())
    assert ToolCallDelta("c1", "run", {"_raw_arguments": '{"cmd": "ls'}) in events


async def test_tool_calls_after_plain_stop_still_mean_tool_use(fake_llm: FakeLLMServer) -> None:
    # Some OpenAI-compatible servers (older Ollama) finish tool turns with "stop".
    fake_llm.push(FakeTurn(tool_calls=[FakeToolCall("noop", {})], stop_reason="stop"))
    events = await collect(provider_for(fake_llm), hello())
    assert events[-1].stop_reason == "tool_use"
    assert events[0].tool_input == {}
    assert events[0].tool_use_id  # the server's id, or one we made up


async def test_length_maps_to_max_tokens_and_cost(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(
        FakeTurn(text="cut", stop_reason="length", input_tokens=1000, output_tokens=500, cached_tokens=200)
    )
    events = await collect(provider_for(fake_llm, "gpt-4o-mini-2024-07-18"), hello())
    finish = events[-1]
    assert finish.stop_reason == "max_tokens"
    assert finish.model == "gpt-4o-mini-2024-07-18"
    expected = (800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1_000_000
    assert finish.cost_usd == pytest.approx(expected)


async def test_request_translation(fake_llm: FakeLLMServer) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": '{"dir": "/"}'}}
    messages = [
        {
            "seq": 1,
            "role": "user",
            "content": "look",
            "image_content": [{"type": "image_url", "image_url": {"url": PNG}}],
        },
        {"seq": 2, "role": "assistant", "content": "", "tool_calls": [call], "phase_id": "p1"},
        {"seq": 3, "role": "tool", "content": "bin etc", "tool_use_id": "call_1"},
        {"seq": 4, "role": "assistant", "content": "again", "tool_calls": [{**call, "id": "call_2"}]},
        {"seq": 5, "role": "tool", "content": "denied", "tool_use_id": "call_2", "is_error": True},
        {"seq": 6, "role": "user", "content": "thanks", "is_client_input": True},
    ]
    tool = ToolSpec("ls", "List a directory", {"type": "object", "properties": {"dir": {"type": "string"}}})
    request = ModelRequest(messages=messages, system="Be brief.", tools=[tool], max_tokens=123)
    await collect(provider_for(fake_llm), request)

    body = fake_llm.last_body
    assert body["model"] == "gpt-4o"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 123  # a custom base_url: the widely supported field
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "ls", "description": "List a directory", "parameters": tool.parameters},
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": PNG}}],
        },
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "bin etc"},
        {"role": "assistant", "content": "again", "tool_calls": [{**call, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "ERROR: denied"},
        {"role": "user", "content": "thanks"},
    ]
    assert fake_llm.requests[-1].headers["authorization"] == "Bearer sk-test"


def test_official_endpoint_gets_max_completion_tokens() -> None:
    assert max_tokens_field(None) == "max_completion_tokens"
    assert max_tokens_field("https://api.openai.com/v1") == "max_completion_tokens"
    assert max_tokens_field("http://localhost:11434/v1") == "max_tokens"


def test_dict_arguments_are_sent_as_json_text() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    wire = to_openai_messages([{"seq": 1, "role": "assistant", "content": "x", "tool_calls": [call]}])
    assert wire[0]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'


async def test_custom_base_url_needs_no_key_and_uses_max_tokens(fake_llm: FakeLLMServer) -> None:
    provider = OpenAIProvider("llama3", api_key=None, base_url=fake_llm.openai_base_url)
    events = await collect(provider, ModelRequest(messages=[{"seq": 1, "role": "user", "content": "hi"}]))
    assert events[-1].model == "llama3"
    assert events[-1].cost_usd == 0.0  # unknown (local) model
    assert fake_llm.requests[-1].headers["authorization"] == "Bearer not-needed"
    assert fake_llm.last_body["max_tokens"] == 8192


def test_missing_key_for_openai_proper() -> None:
    with pytest.raises(ConfigurationError) as info:
        OpenAIProvider("gpt-4o", api_key=None)
    assert info.value.message == "OpenAI API key missing: set OPENAI_API_KEY (or APIARY_OPENAI_API_KEY)"
    assert info.value.retryable is False


async def test_acomplete_is_not_streamed(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text="A summary.", input_tokens=50, output_tokens=9, cached_tokens=10))
    provider = provider_for(fake_llm)
    try:
        response = await provider.acomplete(ModelRequest(messages=hello().messages, system="Summarise"))
    finally:
        await provider.aclose()
    assert response.content == "A summary."
    assert (response.input_tokens, response.output_tokens, response.cached_tokens) == (50, 9, 10)
    assert response.stop_reason == "end_turn"
    assert response.model == "gpt-4o"
    assert "stream" not in fake_llm.last_body
    assert fake_llm.last_body["messages"][0] == {"role": "system", "content": "Summarise"}


@pytest.mark.parametrize(
    ("status", "error_class", "retryable"),
    [
        (429, ProviderRateLimited, True),
        (500, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
        (401, ProviderAuthError, False),
        (403, ProviderAuthError, False),
        (400, ProviderError, False),
        (404, ProviderError, False),
    ],
)
async def test_http_errors_map_to_provider_errors(
    fake_llm: FakeLLMServer, status: int, error_class: type[ProviderError], retryable: bool
) -> None:
    fake_llm.push_error(status, "something went wrong")
    with pytest.raises(ProviderError) as info:
        await collect(provider_for(fake_llm), hello())
    assert type(info.value) is error_class
    assert info.value.retryable is retryable
    assert info.value.message.startswith(f"OpenAI API error {status}: something went wrong")
    assert len(fake_llm.requests) == 1  # the SDK must not retry on its own


async def test_auth_error_names_the_setting(fake_llm: FakeLLMServer) -> None:
    fake_llm.push_error(401, "invalid api key")
    with pytest.raises(ProviderAuthError) as info:
        await collect(provider_for(fake_llm), hello())
    assert info.value.message == (
        "OpenAI API error 401: invalid api key (check OPENAI_API_KEY (or APIARY_OPENAI_API_KEY))"
    )
    assert "Traceback" not in str(info.value)


async def test_acomplete_errors_are_mapped_too(fake_llm: FakeLLMServer) -> None:
    fake_llm.push_error(429, "slow down")
    provider = provider_for(fake_llm)
    with pytest.raises(ProviderRateLimited):
        await provider.acomplete(hello())
    await provider.aclose()


async def test_error_inside_the_stream(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text=["partial"], stream_error="server_error", error_message="boom"))
    seen: list[Any] = []

    async def consume() -> None:
        provider = provider_for(fake_llm)
        try:
            async for event in provider.stream(hello()):
                seen.append(event)
        finally:
            await provider.aclose()

    with pytest.raises(ProviderUnavailable) as info:
        await consume()
    assert seen == [TextDelta("partial")]
    assert info.value.message == "OpenAI API error: boom"


async def test_slow_server_times_out(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text="late", delay_s=2.0))
    with pytest.raises(ProviderTimeout) as info:
        await collect(provider_for(fake_llm, timeout_s=0.3), hello())
    assert info.value.retryable is True
    assert info.value.message == "OpenAI API request timed out"


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider("gpt-4o", api_key="k", base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ProviderUnavailable) as info:
        await collect(provider, hello())
    assert info.value.retryable is True
    assert info.value.message.startswith("OpenAI API unreachable")


async def test_stopping_early_closes_cleanly(fake_llm: FakeLLMServer) -> None:
    fake_llm.push(FakeTurn(text=["a", "b", "c"], delay_s=0.05))
    provider = provider_for(fake_llm)
    stream = provider.stream(hello())
    first = await anext(stream)
    await stream.aclose()  # what the loop does when a run is cancelled
    await provider.aclose()
    assert first == TextDelta("a")


def test_assembler_splits_calls_that_share_an_index() -> None:
    calls = _ToolCallAssembler()
    calls.add(0, "a", "one", '{"x"')
    calls.add(0, None, None, ": 1}")
    calls.add(0, "b", "two", "{}")
    assert calls.flush() == [ToolCallDelta("a", "one", {"x": 1}), ToolCallDelta("b", "two", {})]
    assert calls.flush() == []


async def test_shared_http_client_is_used_and_left_open(fake_llm: FakeLLMServer) -> None:
    async with httpx.AsyncClient() as shared:
        provider = provider_for(fake_llm, http_client=shared)
        events = await collect(provider, hello())  # collect() also closes the provider
        assert events[0] == TextDelta("ok")
        assert not shared.is_closed
