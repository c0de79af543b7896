"""OpenAI Chat Completions adapter; also serves OpenAI-compatible servers (Ollama, vLLM, LM Studio).

The SDK's own retries are off (``max_retries=0``): the agent loop retries and tells the user.
Token counts follow OpenAI: ``input_tokens`` is the whole prompt, ``cached_tokens`` a part of it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai

from apiary.core.errors import ConfigurationError
from apiary.core.messages import JsonObject, ToolSpec
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
from apiary.llm.pricing import cost_usd

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
}


class OpenAIProvider:
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
            if base_url is None:
                raise ConfigurationError(
                    "OpenAI API key missing: set OPENAI_API_KEY (or APIARY_OPENAI_API_KEY)"
                )
            api_key = "not-needed"  # local servers ignore it, but the SDK insists on a value
        self.model = model
        self._owns_http_client = http_client is None
        self._max_tokens_param = max_tokens_field(base_url)
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            # Always explicit so the SDK does not read OPENAI_BASE_URL: Settings owns the environment.
            base_url=base_url or DEFAULT_BASE_URL,
            http_client=http_client,
            timeout=timeout_s,
            max_retries=0,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        params = self._params(request)
        calls = _ToolCallAssembler()
        stop_reason = "end_turn"
        usage: Any = None
        model = self.model
        with map_provider_errors("openai"):
            stream = await self._client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}
            )
            async with stream:
                async for chunk in stream:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices[:1]:
                        delta = choice.delta
                        reasoning = _reasoning_of(delta)
                        if reasoning:
                            yield ReasoningDelta(reasoning)
                        if delta.content:
                            yield TextDelta(delta.content)
                        if delta.refusal:
                            yield TextDelta(delta.refusal)
                        for tc in delta.tool_calls or []:
                            fn = tc.function
                            calls.add(tc.index, tc.id, fn.name if fn else None, fn.arguments if fn else None)
                        if choice.finish_reason:
                            stop_reason = _STOP_REASONS.get(choice.finish_reason, choice.finish_reason)
                            # Hand calls over now; the usage chunk may still be on its way.
                            for call in calls.flush():
                                yield call
        for call in calls.flush():
            yield call
        if calls.emitted and stop_reason == "end_turn":
            stop_reason = "tool_use"  # some compatible servers say "stop" after tool calls
        yield self._finish(stop_reason, usage, model)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        with map_provider_errors("openai"):
            completion = await self._client.chat.completions.create(**self._params(request))
        choice = completion.choices[0] if completion.choices else None
        reason = (choice.finish_reason if choice else None) or "stop"
        finish = self._finish(
            _STOP_REASONS.get(reason, reason), completion.usage, completion.model or self.model
        )
        return ModelResponse(
            content=(choice.message.content or "") if choice else "",
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
            "messages": to_openai_messages(request.messages, request.system),
            self._max_tokens_param: request.max_tokens,
        }
        if request.tools:
            params["tools"] = to_openai_tools(request.tools)
        return params

    def _finish(self, stop_reason: str, usage: Any, model: str) -> Finish:
        input_tokens = output_tokens = cached = created = 0
        if usage is not None:
            input_tokens = usage.prompt_tokens or 0
            output_tokens = usage.completion_tokens or 0
            details = usage.prompt_tokens_details
            if details is not None:
                cached = details.cached_tokens or 0
                created = getattr(details, "cache_write_tokens", None) or 0
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


def max_tokens_field(base_url: str | None) -> str:
    # OpenAI itself wants max_completion_tokens (reasoning models reject max_tokens), while
    # many compatible servers only know max_tokens.
    official = base_url is None or "api.openai.com" in base_url
    return "max_completion_tokens" if official else "max_tokens"


@dataclass
class _PendingCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _ToolCallAssembler:
    """Joins streamed tool-call fragments, keyed by the ``index`` OpenAI puts on each one."""

    def __init__(self) -> None:
        self._calls: list[_PendingCall] = []  # in arrival order
        self._by_index: dict[int, _PendingCall] = {}
        self.emitted = 0

    def add(self, index: int | None, call_id: str | None, name: str | None, arguments: str | None) -> None:
        key = index or 0
        call = self._by_index.get(key)
        # A new id on a known index means a new call: some servers put every call at index 0.
        if call is None or (call_id and call.id and call_id != call.id):
            call = self._by_index[key] = _PendingCall()
            self._calls.append(call)
        if call_id and not call.id:
            call.id = call_id
        if name and not call.name:  # some servers repeat the name on every fragment
            call.name = name
        if arguments:
            call.arguments.append(arguments)

    def flush(self) -> list[ToolCallDelta]:
        out = [_to_delta(call) for call in self._calls]
        self._calls.clear()
        self._by_index.clear()
        self.emitted += len(out)
        return out


def _to_delta(call: _PendingCall) -> ToolCallDelta:
    return ToolCallDelta(
        tool_use_id=call.id or f"call_{uuid.uuid4().hex[:24]}",
        tool_name=call.name,
        tool_input=parse_tool_arguments("".join(call.arguments)),
    )


def parse_tool_arguments(raw: str) -> dict[str, Any]:
    """Arguments as a dict; unparseable text is kept under ``_raw_arguments`` for the loop to report."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw_arguments": raw}
    return value if isinstance(value, dict) else {"_raw_arguments": raw}


def _reasoning_of(delta: Any) -> str:
    # Not in the OpenAI schema: vLLM/DeepSeek send ``reasoning_content``, Ollama ``reasoning``.
    extra = getattr(delta, "model_extra", None) or {}
    value = extra.get("reasoning_content") or extra.get("reasoning")
    return value if isinstance(value, str) else ""


def to_openai_tools(tools: list[ToolSpec]) -> list[JsonObject]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def to_openai_messages(messages: list[JsonObject], system: str = "") -> list[JsonObject]:
    """Stored messages (SPEC B 6.3) as Chat Completions messages, system prompt first."""
    out: list[JsonObject] = [{"role": "system", "content": system}] if system else []
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content") or ""
        if role == "tool":
            if msg.get("is_error"):
                content = f"ERROR: {content}"
            out.append({"role": "tool", "tool_call_id": msg.get("tool_use_id", ""), "content": content})
        elif role == "assistant":
            calls = [_wire_tool_call(raw) for raw in msg.get("tool_calls") or []]
            wire: JsonObject = {"role": "assistant", "content": content}
            if calls:
                wire["tool_calls"] = calls
                wire["content"] = content or None  # OpenAI's documented form for a tool-only turn
            out.append(wire)
        elif role == "user":
            images = [b for b in msg.get("image_content") or [] if b.get("type") == "image_url"]
            if images:
                parts: list[JsonObject] = [{"type": "text", "text": content}] if content else []
                parts.extend({"type": "image_url", "image_url": b["image_url"]} for b in images)
                out.append({"role": "user", "content": parts})
            else:
                out.append({"role": "user", "content": content})
        else:
            logger.warning("skipping message with unknown role %r (seq %s)", role, msg.get("seq"))
    return out


def _wire_tool_call(raw: JsonObject) -> JsonObject:
    fn = raw.get("function") or {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = json.dumps(args if args is not None else {}, ensure_ascii=False)
    return {
        "id": raw.get("id", ""),
        "type": "function",
        "function": {"name": fn.get("name", ""), "arguments": args},
    }
