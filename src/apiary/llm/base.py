"""The provider interface: one streaming call and one one-shot call (SPEC B 11).

Adapters only translate between apiary's stored messages (SPEC B 6.3) and a vendor's wire format;
the agent loop assembles the response. Failures are raised as ``core.errors.ProviderError``
subclasses whose ``retryable`` flag the loop's retry policy reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from apiary.core.messages import JsonObject, ToolSpec


@dataclass(frozen=True, slots=True)
class ModelRequest:
    messages: list[JsonObject]          # stored messages, oldest first
    system: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int = 8192


@dataclass(frozen=True, slots=True)
class TextDelta:
    content: str
    kind: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    content: str
    kind: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A complete tool call (adapters assemble streamed argument fragments first)."""

    tool_use_id: str
    tool_name: str
    tool_input: dict[str, Any]
    kind: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class Finish:
    stop_reason: str = "end_turn"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    kind: Literal["finish"] = "finish"


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | Finish


@dataclass(frozen=True, slots=True)
class ModelResponse:
    content: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    stop_reason: str = "end_turn"


class LLMProvider(Protocol):
    model: str
    supports_images: bool

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]: ...

    async def acomplete(self, request: ModelRequest) -> ModelResponse: ...

    async def aclose(self) -> None: ...
