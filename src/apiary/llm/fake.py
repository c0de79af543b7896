"""Fake providers for tests and the demo: they run the production code path and record requests.

``ScriptedLLM`` plays a list of turns; ``FunctionLLM`` computes each turn from the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from apiary.llm.base import Finish, ModelRequest, ModelResponse, StreamEvent, TextDelta, ToolCallDelta


@dataclass(frozen=True)
class Turn:
    """One scripted model response."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delay_s: float = 0.0  # pause before each streamed chunk
    error: Exception | None = None
    chunk_words: bool = True


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _content_chars(messages: list[Any]) -> int:
    total = 0
    for m in messages:
        content = m.get("content", "")
        total += len(content) if type(content) is str else len(str(content))
    return total


class _PrefixChars:
    """The character count of a conversation's messages, kept per conversation (keyed by the identity
    of its first message) so that a request that only adds messages is counted in O(new messages) of
    Python work. Only the messages' ids are kept, never the messages: a long-running server must not
    hold on to conversations (a recycled id can at worst skew a fake model's token estimate)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._known: dict[int, tuple[tuple[int, ...], int]] = {}   # id(first) -> (ids counted, chars)

    def count(self, messages: list[Any]) -> int:
        if not messages:
            return 0
        key = id(messages[0])
        known = self._known.get(key)
        ids = tuple(map(id, messages))
        start, total = 0, 0
        if known is not None:
            prefix, chars = known
            if ids[:len(prefix)] == prefix:
                start, total = len(prefix), chars
        total += _content_chars(messages[start:])
        if known is None and len(self._known) >= self._size:
            self._known.pop(next(iter(self._known)))
        self._known[key] = (ids, total)
        return total


def request_chars(request: ModelRequest, counter: _PrefixChars | None = None) -> int:
    messages = request.messages
    return len(request.system) + (counter.count(messages) if counter is not None else _content_chars(messages))


async def play_turn(
    turn: Turn, request: ModelRequest, model: str, call_no: int, counter: _PrefixChars | None = None
) -> AsyncIterator[StreamEvent]:
    if turn.error is not None:
        raise turn.error
    chunks = turn.text.split(" ") if turn.chunk_words else [turn.text]
    for i, word in enumerate(chunks):
        if not word and len(chunks) > 1:
            continue
        if turn.delay_s:
            await asyncio.sleep(turn.delay_s)
        yield TextDelta(word if i == 0 else " " + word)
    for j, (name, args) in enumerate(turn.tool_calls):
        yield ToolCallDelta(f"call_{call_no}_{j}", name, args)
    yield Finish(
        stop_reason="tool_use" if turn.tool_calls else "end_turn",
        input_tokens=request_chars(request, counter) // 4,
        output_tokens=estimate_tokens(turn.text),
        model=model,
    )


class FunctionLLM:
    """A provider whose every turn is ``fn(request)``; records each request it gets."""

    supports_images = True

    def __init__(self, fn: Callable[[ModelRequest], Turn], *, model: str = "function",
                 keep_requests: bool = True) -> None:
        self._fn = fn
        self.model = model
        self.keep_requests = keep_requests   # tests read them; a long-running server must not keep them
        self.requests: list[ModelRequest] = []
        self._chars = _PrefixChars()   # input token counts in O(new messages), not O(conversation)

    def _record(self, request: ModelRequest) -> None:
        if self.keep_requests:
            self.requests.append(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        self._record(request)
        turn = self._fn(request)
        async for event in play_turn(turn, request, self.model, len(request.messages), self._chars):
            yield event

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        self._record(request)
        turn = self._fn(request)
        if turn.error is not None:
            raise turn.error
        return ModelResponse(
            content=turn.text,
            model=self.model,
            input_tokens=request_chars(request) // 4,
            output_tokens=estimate_tokens(turn.text),
        )

    async def aclose(self) -> None:
        return None


class ScriptedLLM(FunctionLLM):
    """Plays ``turns`` in order; past the end it answers with an empty text."""

    def __init__(self, turns: list[Turn], *, model: str = "scripted") -> None:
        self.turns = list(turns)
        self._next = 0
        super().__init__(self._take, model=model)

    def _take(self, request: ModelRequest) -> Turn:
        if self._next >= len(self.turns):
            return Turn(text="")
        turn = self.turns[self._next]
        self._next += 1
        return turn
