"""A real HTTP server on 127.0.0.1 that speaks the OpenAI and Anthropic wire formats.

The official SDKs talk to it exactly as they would to the vendors, so tests cover the whole
path (SDK, SSE parsing, error mapping) without mocks. One server answers both APIs:

    POST /v1/chat/completions    OpenAI Chat Completions, streaming (SSE) or not
    POST /v1/messages            Anthropic Messages, streaming (SSE) or not

Queue ``FakeTurn`` replies with ``push()`` (or set ``responder``); each turn renders in the
vendor format of the route that receives it. Every request is kept in ``requests``.

    async with running_fake_llm_server() as server:
        server.push(FakeTurn(text=["Hel", "lo"]))
        provider = OpenAIProvider("gpt-4o", api_key="k", base_url=server.openai_base_url)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)  # str: sent verbatim (may be bad JSON)
    id: str | None = None


@dataclass
class FakeTurn:
    text: list[str] | str = ""  # a list is streamed fragment by fragment
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    stop_reason: str | None = None  # vendor-native; derived from tool_calls when None
    model: str | None = None  # defaults to the requested model
    input_tokens: int = 12  # OpenAI: whole prompt; Anthropic: uncached part (as the vendors report)
    output_tokens: int = 7
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    error_status: int | None = None  # answer this HTTP status with the vendor's error JSON
    error_message: str = ""
    stream_error: str | None = None  # vendor error type sent inside the stream, after the text
    delay_s: float = 0.0  # pause before each SSE event (and before an error response)
    fragment_size: int = 5  # tool-call arguments are streamed in pieces of this many characters

    @property
    def fragments(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) and self.text else list(self.text or [])

    def arguments_text(self, call: FakeToolCall) -> str:
        return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)

    def pieces(self, text: str) -> list[str]:
        size = max(1, self.fragment_size)
        return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeLLMServer:
    def __init__(self) -> None:
        self.turns: deque[FakeTurn] = deque()
        self.requests: list[RecordedRequest] = []
        self.default_turn = FakeTurn(text="ok")
        # Computes the reply from the request when the queue is empty (for end-to-end tests).
        self.responder: Callable[[RecordedRequest], FakeTurn] | None = None
        self._runner: web.AppRunner | None = None
        self._calls = 0
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        # Cancel handlers when clients go away and don't wait long for them at shutdown.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # -- scripting -------------------------------------------------------------------------
    def push(self, *turns: FakeTurn) -> None:
        self.turns.extend(turns)

    def push_error(self, status: int, message: str = "", **kwargs: Any) -> None:
        self.push(FakeTurn(error_status=status, error_message=message, **kwargs))

    @property
    def last_body(self) -> dict[str, Any]:
        return self.requests[-1].body

    async def _take(self, request: web.Request) -> tuple[RecordedRequest, FakeTurn]:
        headers = {k.lower(): v for k, v in request.headers.items()}  # lower-cased names
        record = RecordedRequest(request.path, headers, await request.json())
        self.requests.append(record)
        self._calls += 1
        if self.turns:
            return record, self.turns.popleft()
        if self.responder is not None:
            return record, self.responder(record)
        return record, self.default_turn

    # -- OpenAI ----------------------------------------------------------------------------
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        record, turn = await self._take(request)
        model = turn.model or record.body.get("model", "gpt-fake")
        if turn.error_status is not None:
            await asyncio.sleep(turn.delay_s)
            err_type, code = _OPENAI_ERRORS.get(turn.error_status, ("server_error", None))
            message = turn.error_message or f"fake error {turn.error_status}"
            body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
            return web.json_response(body, status=turn.error_status)
        finish = turn.stop_reason or ("tool_calls" if turn.tool_calls else "stop")
        usage = {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": turn.input_tokens + turn.output_tokens,
            "prompt_tokens_details": {"cached_tokens": turn.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        call_ids = [c.id or f"call_{self._calls}_{i}" for i, c in enumerate(turn.tool_calls)]
        if not record.body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(turn.fragments) or None}
            if turn.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": c.name, "arguments": turn.arguments_text(c)},
                    }
                    for cid, c in zip(call_ids, turn.tool_calls, strict=True)
                ]
            return web.json_response(
                {
                    "id": f"chatcmpl-fake{self._calls}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": f"chatcmpl-fake{self._calls}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": frag}) for frag in turn.fragments]
        for i, (cid, call) in enumerate(zip(call_ids, turn.tool_calls, strict=True)):
            head = {
                "index": i,
                "id": cid,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [head]}))
            events += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                for piece in turn.pieces(turn.arguments_text(call))
            ]
        if turn.stream_error:
            message = turn.error_message or "fake stream failure"
            events.append({"error": {"message": message, "type": turn.stream_error, "code": None}})
        else:
            events.append(chunk({}, finish))
            if (record.body.get("stream_options") or {}).get("include_usage"):
                events.append({**chunk({}), "choices": [], "usage": usage})
        frames = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
        return await _send_sse(request, frames, turn.delay_s)

    # -- Anthropic -------------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        record, turn = await self._take(request)
        model = turn.model or record.body.get("model", "claude-fake")
        if turn.error_status is not None:
            await asyncio.sleep(turn.delay_s)
            err_type = _ANTHROPIC_ERRORS.get(turn.error_status, "api_error")
            message = turn.error_message or f"fake error {turn.error_status}"
            body = {"type": "error", "error": {"type": err_type, "message": message}}
            return web.json_response(body, status=turn.error_status)
        stop = turn.stop_reason or ("tool_use" if turn.tool_calls else "end_turn")
        call_ids = [c.id or f"toolu_fake{self._calls}_{i}" for i, c in enumerate(turn.tool_calls)]
        usage = {
            "input_tokens": turn.input_tokens,
            "cache_creation_input_tokens": turn.cache_creation_tokens,
            "cache_read_input_tokens": turn.cached_tokens,
            "output_tokens": turn.output_tokens,
        }
        text = "".join(turn.fragments)
        message = {
            "id": f"msg_fake{self._calls}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        if not record.body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            content += [
                {"type": "tool_use", "id": cid, "name": c.name, "input": c.arguments}
                for cid, c in zip(call_ids, turn.tool_calls, strict=True)
            ]
            return web.json_response({**message, "content": content, "stop_reason": stop, "usage": usage})

        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]
        index = 0
        if turn.fragments:
            events.append(_block_start(index, {"type": "text", "text": ""}))
            events += [_block_delta(index, {"type": "text_delta", "text": f}) for f in turn.fragments]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        if turn.stream_error:
            message_text = turn.error_message or "fake stream failure"
            events.append(
                ("error", {"type": "error", "error": {"type": turn.stream_error, "message": message_text}})
            )
        else:
            for cid, call in zip(call_ids, turn.tool_calls, strict=True):
                events.append(
                    _block_start(index, {"type": "tool_use", "id": cid, "name": call.name, "input": {}})
                )
                events += [
                    _block_delta(index, {"type": "input_json_delta", "partial_json": piece})
                    for piece in turn.pieces(turn.arguments_text(call))
                ]
                events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
                index += 1
            delta_usage = {"output_tokens": turn.output_tokens}
            events.append(
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": delta_usage,
                    },
                )
            )
            events.append(("message_stop", {"type": "message_stop"}))
        frames = [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events]
        return await _send_sse(request, frames, turn.delay_s)


def _block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


async def _send_sse(request: web.Request, frames: list[str], delay_s: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for frame in frames:
        if delay_s:
            await asyncio.sleep(delay_s)
        await response.write(frame.encode())
    await response.write_eof()
    return response


@asynccontextmanager
async def running_fake_llm_server() -> AsyncIterator[FakeLLMServer]:
    server = FakeLLMServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
