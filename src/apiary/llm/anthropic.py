"""Anthropic Messages API adapter.

The SDK's own retries are off (``max_retries=0``): the agent loop retries and tells the user.
Token counts are normalised to the OpenAI convention: ``input_tokens`` is the whole prompt
(Anthropic's ``input_tokens`` + cache reads + cache writes), ``cached_tokens`` the cache reads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from apiary.core.errors import ConfigurationError
from apiary.core.messages import JsonObject, ToolSpec, tool_calls_of
from apiary.llm._errors import map_provider_errors
from apiary.llm.base import (
    Finish,
    ModelRequest,
    ModelResponse,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from apiary.llm.openai_compat import parse_tool_arguments
from apiary.llm.pricing import cost_usd

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"

_STOP_REASONS = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
}
_CACHE = {"type": "ephemeral"}


class AnthropicProvider:
    supports_images = True

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        http_client: Any = None,
        timeout_s: float = 600.0,
    ) -> None:
        if not api_key:
            raise ConfigurationError(
                "Anthropic API key missing: set ANTHROPIC_API_KEY (or APIARY_ANTHROPIC_API_KEY)"
            )
        self.model = model
        self._owns_http_client = http_client is None
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            # Always explicit so the SDK does not read ANTHROPIC_BASE_URL: Settings owns the environment.
            base_url=base_url or DEFAULT_BASE_URL,
            http_client=http_client,  # anthropic>=2 wants an httpx2.AsyncClient here
            timeout=timeout_s,
            max_retries=0,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        params = self._params(request)
        tools: dict[int, dict[str, Any]] = {}  # open tool_use blocks by content index
        usage: dict[str, int] = {}
        stop_reason = "end_turn"
        model = self.model
        with map_provider_errors("anthropic"):
            stream = await self._client.messages.create(**params, stream=True)
            async with stream:
                async for event in stream:
                    kind = event.type
                    if kind == "message_start":
                        model = event.message.model or model
                        _merge_usage(usage, event.message.usage)
                    elif kind == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            tools[event.index] = {
                                "id": block.id,
                                "name": block.name,
                                "input": block.input,
                                "parts": [],
                            }
                        elif block.type == "text" and block.text:
                            yield TextDelta(block.text)
                    elif kind == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta" and delta.text:
                            yield TextDelta(delta.text)
                        elif delta.type == "input_json_delta" and event.index in tools:
                            tools[event.index]["parts"].append(delta.partial_json or "")
                        elif delta.type == "thinking_delta" and delta.thinking:
                            yield ReasoningDelta(delta.thinking)
                    elif kind == "content_block_stop" and event.index in tools:
                        yield _tool_call(tools.pop(event.index))
                    elif kind == "message_delta":
                        if event.delta.stop_reason:
                            stop_reason = _STOP_REASONS.get(event.delta.stop_reason, event.delta.stop_reason)
                        _merge_usage(usage, event.usage)
        for index in sorted(tools):  # a stream cut short of content_block_stop
            yield _tool_call(tools[index])
        yield self._finish(stop_reason, usage, model)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        # Built on the stream: the SDK refuses long non-streaming calls for large max_tokens.
        text: list[str] = []
        finish = Finish(model=self.model)
        async for event in self.stream(request):
            if isinstance(event, TextDelta):
                text.append(event.content)
            elif isinstance(event, Finish):
                finish = event
        return ModelResponse(
            content="".join(text),
            model=finish.model,
            input_tokens=finish.input_tokens,
            output_tokens=finish.output_tokens,
            cached_tokens=finish.cached_tokens,
            cache_creation_tokens=finish.cache_creation_tokens,
            cost_usd=finish.cost_usd,
            stop_reason=finish.stop_reason,
        )

    async def aclose(self) -> None:
        # The SDK's close() would also close a caller's shared http_client; that is theirs to close.
        if self._owns_http_client:
            await self._client.close()

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": to_anthropic_messages(request.messages),
        }
        if request.system:
            # A cache breakpoint after the system prompt covers tools + system for every turn.
            params["system"] = [{"type": "text", "text": request.system, "cache_control": _CACHE}]
        if request.tools:
            params["tools"] = to_anthropic_tools(request.tools)
        return params

    def _finish(self, stop_reason: str, usage: dict[str, int], model: str) -> Finish:
        cached = usage.get("cache_read_input_tokens", 0)
        created = usage.get("cache_creation_input_tokens", 0)
        input_tokens = usage.get("input_tokens", 0) + cached + created
        output_tokens = usage.get("output_tokens", 0)
        return Finish(
            stop_reason=stop_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached,
            cache_creation_tokens=created,
            cost_usd=cost_usd(
                model, input_tokens, output_tokens, cached_tokens=cached, cache_creation_tokens=created
            ),
            model=model,
        )


def _merge_usage(into: dict[str, int], usage: Any) -> None:
    # message_delta counts are cumulative and may omit fields, so later non-null values win.
    if usage is None:
        return
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        value = getattr(usage, key, None)
        if isinstance(value, int):
            into[key] = value


def _tool_call(block: dict[str, Any]) -> ToolCallDelta:
    raw = "".join(block["parts"])
    if raw:
        tool_input = parse_tool_arguments(raw)
    else:
        initial = block.get("input")
        tool_input = dict(initial) if isinstance(initial, dict) else {}
    return ToolCallDelta(tool_use_id=block["id"], tool_name=block["name"], tool_input=tool_input)


def to_anthropic_tools(tools: list[ToolSpec]) -> list[JsonObject]:
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


def to_anthropic_messages(messages: list[JsonObject]) -> list[JsonObject]:
    """Stored messages as Anthropic turns: tool results ride in user turns, same roles merge."""
    out: list[JsonObject] = []
    for msg in messages:
        role, blocks = _blocks_of(msg)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for turn in out:
        # The API wants tool results first in a user turn (a user note may follow them).
        turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    if out:
        # Second cache breakpoint: the conversation so far, reused by the next turn.
        last = out[-1]["content"][-1]
        out[-1]["content"][-1] = {**last, "cache_control": _CACHE}
    return out


def _blocks_of(msg: JsonObject) -> tuple[str, list[JsonObject]]:
    role = msg.get("role")
    content = msg.get("content") or ""
    if role == "tool":
        text = f"ERROR: {content}" if msg.get("is_error") else content
        block: JsonObject = {
            "type": "tool_result",
            "tool_use_id": msg.get("tool_use_id", ""),
            "content": text or "(no output)",  # empty results are rejected
        }
        if msg.get("is_error"):
            block["is_error"] = True
        return "user", [block]
    if role == "assistant":
        blocks: list[JsonObject] = [{"type": "text", "text": content}] if content.strip() else []
        blocks.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            for call in tool_calls_of(msg)
        )
        return "assistant", blocks
    if role == "user":
        # Images before the text, as Anthropic recommends.
        blocks = [b for b in map(_image_block, msg.get("image_content") or []) if b is not None]
        if content.strip() or not blocks:
            blocks.append({"type": "text", "text": content or "(empty message)"})
        return "user", blocks
    logger.warning("skipping message with unknown role %r (seq %s)", role, msg.get("seq"))
    return "", []


def _image_block(part: JsonObject) -> JsonObject | None:
    url = (part.get("image_url") or {}).get("url", "") if part.get("type") == "image_url" else ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[len("data:") :].split(";")[0] or "image/png"
        if ";base64" not in header or not data:
            logger.warning("skipping image that is not a base64 data URL")
            return None
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url:
        logger.warning("skipping image with unsupported URL scheme")
    return None
