"""One model call of a turn: stream deltas as events, assemble the response, store it.

Retries: rate limits and overloads are retried with backoff for up to ``capacity_window_s``;
other retryable errors up to ``max_retries`` times; each retry publishes ``node_retry``.
A resume reuses the response recorded for this (iteration, inner turn); a recorded replay must.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from apiary.agent.context import RunContext
from apiary.core.errors import ProviderError, ProviderRateLimited, RunError
from apiary.core.messages import JsonObject, ToolCall
from apiary.llm.base import Finish, ModelRequest, TextDelta, ToolCallDelta

logger = logging.getLogger(__name__)
_PARTIAL_EVERY_S = 0.2
_FIRST_PARTIAL_AFTER_S = 0.005
MIN_OUTPUT_TOKENS = 256


class NoRecording(RunError):
    pass


@dataclass
class ModelResult:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: Finish = field(default_factory=Finish)

    def to_record(self) -> JsonObject:
        return {"text": self.text, "tool_calls": [c.to_wire() for c in self.tool_calls],
                "finish": {k: getattr(self.finish, k) for k in Finish.__dataclass_fields__ if k != "kind"}}

    @staticmethod
    def from_record(raw: JsonObject) -> ModelResult:
        return ModelResult(str(raw.get("text", "")), [ToolCall.from_wire(c) for c in raw.get("tool_calls", [])],
                           Finish(**(raw.get("finish") or {})))


class Streamer:
    """Publishes deltas and keeps the partial text saved, for one model call.

    Deltas are posted (``Emitter.post``): the model's stream is never held up by the event log,
    and those that arrive in one burst (one turn of the event loop) go out as one append, each
    still its own event, in order. ``flush`` posts what is left; every path out of the call flushes
    before it publishes anything else, so no delta follows the next event. Where the log commits in
    one order with the conversation store (``EventLog.orders_before``: SQLite's one writer) that is
    all: the response message written next cannot be stored before its deltas. Elsewhere
    ``flush`` also waits until they are stored.

    The partial text is saved once the stream has gone on for ``_FIRST_PARTIAL_AFTER_S`` after
    its first delta, then every ``_PARTIAL_EVERY_S``: a response that arrives all at once is
    stored as its message only, and never as a partial first.
    """

    def __init__(self, ctx: RunContext, seq: int, inner_turn: int) -> None:
        self.ctx, self.seq, self.inner_turn = ctx, seq, inner_turn
        self.text = ""
        self._first_at: float | None = None
        self._saved_at = 0.0
        self.saved = False
        self._type = "client_output_delta" if ctx.role == "queen" else "llm_text_delta"
        self._queued: list[tuple[str, dict[str, Any]]] = []
        self._post_scheduled = False
        self._error: BaseException | None = None   # a failed publish: raised by the next delta or flush

    async def delta(self, content: str) -> None:
        if not content:
            return
        if self._error is not None:
            raise self._error
        self.text += content
        ctx = self.ctx
        # ``iteration`` on worker deltas too (an addition): history collapses per iteration, not across runs.
        self._queued.append((self._type, {"content": content, "snapshot": self.text, "inner_turn": self.inner_turn,
                                          "iteration": ctx.state.iteration}))
        if not self._post_scheduled:
            self._post_scheduled = True
            asyncio.get_running_loop().call_soon(self._post_queued)
        now = ctx.clock.monotonic()
        if self._first_at is None:
            self._first_at = now
        elif now - max(self._saved_at, self._first_at) >= (_PARTIAL_EVERY_S if self.saved else _FIRST_PARTIAL_AFTER_S):
            self._saved_at = now
            await self.save_partial()

    def _post_queued(self) -> None:
        self._post_scheduled = False
        if not self._queued:
            return
        batch, self._queued = self._queued, []
        try:
            self.ctx.emitter.post_many(batch)
        except Exception as exc:   # an earlier post's failure, surfacing here
            self._error = exc

    async def flush(self) -> None:
        """Every delta received so far is posted (and, where the log does not keep one order with
        the conversation store, stored). Also while the caller is being cancelled."""
        self._post_queued()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        ctx = self.ctx
        if ctx.emitter.bus.log.orders_before(ctx.conversations):
            ctx.emitter.raise_failed()
        else:
            await asyncio.shield(ctx.emitter.settle())

    async def save_partial(self) -> None:
        if self.text:
            partial = {"seq": self.seq, "role": "assistant", "content": self.text, "run_id": self.ctx.run_id}
            await self.ctx.conversations.put_partial(self.ctx.owner, self.seq, partial)
            self.saved = True


def build_request(ctx: RunContext, max_tokens: int | None = None) -> ModelRequest:
    hooks = ctx.hooks
    return ModelRequest(messages=list(ctx.state.messages), system=hooks.system_prompt(),
                        tools=hooks.tools().specs() + builtin_specs(ctx),
                        max_tokens=max_tokens or ctx.config.max_tokens)


def builtin_specs(ctx: RunContext) -> list[Any]:
    from apiary.agent.builtins import builtin_specs as specs

    return specs(ctx.role, ctx.hooks.tools())


async def _stream_once(ctx: RunContext, streamer: Streamer, max_tokens: int | None) -> ModelResult:
    result = ModelResult()
    async for event in ctx.llm.stream(build_request(ctx, max_tokens)):
        if isinstance(event, TextDelta):
            await streamer.delta(event.content)
        elif isinstance(event, ToolCallDelta):
            result.tool_calls.append(ToolCall(event.tool_use_id, event.tool_name, dict(event.tool_input)))
        elif isinstance(event, Finish):
            result.finish = event
    result.text = streamer.text
    return result


async def _stream_with_retries(ctx: RunContext, streamer: Streamer, max_tokens: int | None = None) -> ModelResult:
    policy = ctx.config.retry
    attempt = 0
    started = ctx.clock.monotonic()
    while True:
        try:
            return await _stream_once(ctx, streamer, max_tokens)
        except ProviderError as exc:
            capacity = isinstance(exc, ProviderRateLimited)
            in_window = ctx.clock.monotonic() - started < policy.capacity_window_s
            await streamer.flush()   # what was received goes out before the retry (or the error) is told
            if not exc.retryable or (not capacity and attempt >= policy.max_retries) or not in_window:
                raise
            if streamer.text:   # a half-streamed answer is not resumable: start the call afresh
                streamer.text = ""
            await ctx.emitter.emit("node_retry", {"retry_count": attempt + 1,
                                                  "max_retries": -1 if capacity else policy.max_retries,
                                                  "error": str(exc)[:500]})
            logger.warning("model call failed (%s), retrying", exc)
            await asyncio.sleep(policy.delay(attempt))
            attempt += 1


async def _metered(ctx: RunContext, streamer: Streamer) -> ModelResult:
    """A live model call inside every budget: reserve first, then charge what it really used."""
    max_tokens = ctx.config.max_tokens
    estimate = ctx.state.estimated_tokens(ctx.hooks.system_prompt())
    left = [b.tokens_left() for b in ctx.budgets]
    room = min((n for n in left if n is not None), default=None)
    if room is not None:
        max_tokens = max(0, min(max_tokens, room - estimate))
        if max_tokens < MIN_OUTPUT_TOKENS:
            max_tokens = room + 1    # cannot fit a useful answer: the reservation below refuses
    reserve = estimate + max_tokens
    held = []
    try:
        for budget in ctx.budgets:
            await budget.reserve(reserve)
            held.append(budget)
        started = ctx.clock.monotonic()
        result = await _stream_with_retries(ctx, streamer, max_tokens)
    finally:
        for budget in held:
            budget.release(reserve)
    finish = result.finish
    cost = finish.cost_usd
    price = ctx.prices.get(finish.model or ctx.llm.model) or ctx.prices.get(ctx.llm.model)
    if not cost and price:
        cost = (finish.input_tokens * price[0] + finish.output_tokens * price[1]) / 1_000_000
        result.finish = replace(finish, cost_usd=cost)
    for budget in held:
        await budget.add(tokens=finish.input_tokens + finish.output_tokens, usd=cost,
                         seconds=ctx.clock.monotonic() - started)
    return result


async def call_model(ctx: RunContext, inner_turn: int) -> ModelResult:
    """Stream one response and store it as an assistant message (before any tool runs)."""
    key = f"model:{inner_turn}"
    seq = ctx.state.next_seq
    streamer = Streamer(ctx, seq, inner_turn)
    recorded = ctx.recorded_value(key)
    try:
        if recorded is not None:
            result = ModelResult.from_record(recorded)
            for i, word in enumerate(result.text.split(" ")):
                await streamer.delta(word if i == 0 else " " + word)
        elif ctx.replay == "recorded":
            raise NoRecording(f"no recorded response for step {ctx.state.iteration}")
        else:
            result = await _metered(ctx, streamer)
        await streamer.flush()
    except asyncio.CancelledError:
        await asyncio.shield(_keep_truncated(ctx, streamer))
        raise
    except BaseException:
        with contextlib.suppress(Exception):   # no delta may follow what the caller publishes next
            await asyncio.shield(streamer.flush())
        raise
    # The response, its recording and the cleared partial: one write.
    ctx.stage_record(key, result.to_record())
    ctx.stage_message("assistant", result.text, tool_calls=[c.to_wire() for c in result.tool_calls])
    if streamer.saved:
        ctx.stage_partial_cleared(seq)
    await ctx.flush()
    return result


async def _keep_truncated(ctx: RunContext, streamer: Streamer) -> None:
    """A cancelled stream keeps its text as a ``truncated`` assistant message."""
    await streamer.flush()
    if streamer.text:
        ctx.stage_message("assistant", streamer.text, truncated=True)
        if streamer.saved:
            ctx.stage_partial_cleared(streamer.seq)
        await ctx.flush()
