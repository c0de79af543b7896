"""AgentLoop: start (fresh or restored) -> iterations (drain inbox, turn, checks, cursor) -> end.

Invariants:
- a turn runs in a child task, so ``cancel_current_turn`` stops only the model stream and tools
  while the loop goes on; cancelling the loop's own task cancels the turn with it;
- whatever is cancelled, the conversation stays consistent: partial text is kept ``truncated``
  and every tool call has exactly one result (see model_call and tool_calls);
- waking up to an empty inbox never runs a turn.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from apiary.agent import detectors
from apiary.agent.builtins import BUILTIN_NAMES, escalate
from apiary.agent.compactor import compact_if_needed
from apiary.agent.context import InboxItem, RunContext
from apiary.agent.model_call import call_model
from apiary.agent.restore import restore
from apiary.agent.tool_calls import run_tool_calls
from apiary.core.errors import ProviderError, RunError, UsageLimitExceeded

logger = logging.getLogger(__name__)

CONTINUE_NUDGE = "[Continue working on your current task.]"
TEXT_ONLY_ESCALATION = "Worker produced text-only turns without progress; auto-escalating"


class LoopFailed(RunError):
    pass


@dataclass
class TurnResult:
    texts: list[str] = field(default_factory=list)
    real_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    asked: bool = False
    set_output: bool = False
    tool_failed: bool = False
    cancelled: bool = False
    stop_reason: str = "end_turn"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def is_empty(self) -> bool:
        return not self.text.strip() and not self.real_calls and not self.asked and not self.set_output


@dataclass
class LoopOutcome:
    status: Literal["completed", "shutdown"]
    outputs: dict[str, Any]
    iterations: int


class AgentLoop:
    def __init__(self, ctx: RunContext, *, initial_messages: list[str] | None = None,
                 greet: bool = False) -> None:
        self.ctx = ctx
        self._initial = initial_messages or []
        self._greet = greet
        self._turn_task: asyncio.Task[TurnResult] | None = None
        self._parked = False
        self.in_turn = False
        self._restored: bool | None = None

    # -- control, called from outside the loop's task ----------------------------------------

    def inject(self, item: InboxItem) -> None:
        self.ctx.put(item)

    def cancel_current_turn(self) -> bool:
        """Cancel the running model stream and tools; the loop goes on. True if a turn ran."""
        task = self._turn_task
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def signal_shutdown(self) -> None:
        self.ctx.shutdown = True
        self.ctx.wake.set()

    @property
    def is_waiting(self) -> bool:
        return not self.in_turn or bool(self.ctx.waiting_requests)

    # -- the loop ------------------------------------------------------------------------------

    async def prepare(self) -> bool:
        """Restore the conversation or write the fresh start (once). True when restored."""
        if self._restored is None:
            self._restored = await restore(self.ctx)
            if not self._restored:
                await self._fresh_start()
        return self._restored

    async def run(self) -> LoopOutcome:
        ctx = self.ctx
        restored = await self.prepare()
        await ctx.emitter.emit("node_loop_started", {"max_iterations": ctx.config.max_iterations})
        await ctx.hooks.after_iteration(ctx, "node_start")
        self._parked = (restored and ctx.role == "queen") or ctx.state.pending_input is not None
        while True:
            if ctx.shutdown:
                return self._outcome("shutdown")
            if self._parked and not await self._wait_for_input():
                continue
            if ctx.state.iteration >= ctx.config.max_iterations:
                raise LoopFailed(f"Max iterations ({ctx.config.max_iterations}) reached without acceptance")
            await self._drain_inbox()
            ctx.state.iteration += 1
            result = await self._iteration()
            if await self._judge(result):
                await ctx.emitter.emit("node_loop_completed", {"iterations": ctx.state.iteration})
                return self._outcome("completed")

    def _outcome(self, status: Literal["completed", "shutdown"]) -> LoopOutcome:
        return LoopOutcome(status, dict(self.ctx.state.outputs), self.ctx.state.iteration)

    async def _fresh_start(self) -> None:
        """The old conversation cleared, meta, first messages and cursor: one write."""
        ctx = self.ctx
        ctx.staged.append(("delete", ctx.owner))
        ctx.staged.append(("meta", ctx.owner, {"system_prompt": ctx.hooks.system_prompt(),
                                               "max_context_tokens": ctx.config.max_context_tokens}))
        for text in self._initial:
            ctx.stage_message("user", text)
        if not self._initial and self._greet:
            ctx.stage_message("user", f"{ctx.stamp()} Hello")
        await ctx.save_cursor()

    async def _wait_for_input(self) -> bool:
        """Park (SPEC B 3.5). False when woken with nothing to do (wait again)."""
        ctx = self.ctx
        if ctx.has_items():
            self._parked = False
            return True
        ctx.wake.clear()
        if ctx.has_items() or ctx.shutdown:
            self._parked = not ctx.has_items()
            return ctx.has_items()
        pending = ctx.state.pending_input or {}
        if pending.get("emit_client_request", True):
            questions = pending.get("questions")
            await ctx.emitter.emit("client_input_requested", {"questions": questions} if questions else {})
        if ctx.has_items():
            self._parked = False
            return True
        await ctx.wake.wait()
        if ctx.has_items():
            self._parked = False
            ctx.state.pending_input = None
            return True
        return False

    async def _drain_inbox(self) -> bool:
        ctx = self.ctx
        drained = False
        triggers: list[str] = []
        while (item := ctx.take()) is not None:
            drained = True
            if item.kind == "trigger":
                triggers.append(item.content)
                continue
            text, extra = ctx.describe_item(item)
            ctx.stage_message("user", text, **extra)
        if triggers:
            ctx.stage_message("user", f"{ctx.stamp()}\n" + "\n\n".join(triggers), is_trigger=True)
        await ctx.flush()   # every message taken from the inbox: one write
        return drained

    async def _iteration(self) -> TurnResult:
        ctx = self.ctx
        # Posted, not awaited (here and for the turn's other progress events): see Emitter.post.
        ctx.emitter.post_many([
            ("node_loop_iteration", {"iteration": ctx.state.iteration, **ctx.hooks.iteration_data()}),
            ("context_usage_updated", self._usage_data("iteration_start"))])
        compacted = await compact_if_needed(ctx)
        if compacted is not None:
            await ctx.emitter.emit("context_compacted", compacted)
            await self._usage_event("post_compaction")
        self._turn_task = asyncio.create_task(self._turn())
        self.in_turn = True
        try:
            result = await self._turn_task
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            result = TurnResult(cancelled=True)
        except ProviderError as exc:
            # Retries happen inside call_model; what escapes is final, retryable or not. The queen
            # reports it and parks (SPEC B 3.3); a worker's execution fails.
            if ctx.role == "worker":
                raise
            result = await self._report_model_error(exc)
        except UsageLimitExceeded as exc:
            if ctx.role == "worker":
                raise
            result = await self._report(f"[{exc.message}. Raise the limit to go on.]")
        finally:
            self.in_turn = False
            self._turn_task = None
        if not result.cancelled:
            ctx.emitter.post("llm_turn_complete", {
                "stop_reason": result.stop_reason, "model": ctx.llm.model, "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens, "cached_tokens": result.cached_tokens,
                "cache_creation_tokens": result.cache_creation_tokens, "cost_usd": result.cost_usd,
                "iteration": ctx.state.iteration})
        return result

    async def _turn(self) -> TurnResult:
        ctx = self.ctx
        result = TurnResult()
        inner = 0
        if ctx.state.messages and ctx.state.messages[-1]["role"] == "assistant":
            await ctx.add_message("user", CONTINUE_NUDGE, is_system_nudge=True)
        while True:
            response = await call_model(ctx, inner)
            self._add_usage(result, response.finish)
            result.texts.append(response.text)
            if not response.tool_calls:
                return result
            outcomes = await run_tool_calls(ctx, response.tool_calls)
            for outcome in outcomes:
                name = outcome.call.name
                result.asked |= name == "ask_user"
                result.set_output |= name == "set_output" and not outcome.output.is_error
                if name not in BUILTIN_NAMES:
                    result.real_calls.append((name, outcome.call.arguments))
                    result.tool_failed |= outcome.output.is_error
            await self._drain_inbox()
            inner += 1

    def _add_usage(self, result: TurnResult, finish: Any) -> None:
        state = self.ctx.state
        result.stop_reason = finish.stop_reason
        result.input_tokens += finish.input_tokens
        result.output_tokens += finish.output_tokens
        result.cached_tokens += finish.cached_tokens
        result.cache_creation_tokens += finish.cache_creation_tokens
        result.cost_usd += finish.cost_usd
        state.input_tokens += finish.input_tokens
        state.output_tokens += finish.output_tokens
        if finish.input_tokens:
            state.last_input_tokens = finish.input_tokens + finish.output_tokens

    async def _report_model_error(self, exc: ProviderError) -> TurnResult:
        return await self._report(f"[Error: LLM call failed: {exc}. Please try again.]")

    async def _report(self, text: str) -> TurnResult:
        await self.ctx.emitter.emit("client_output_delta", {"content": text, "snapshot": text, "inner_turn": 0,
                                                            "iteration": self.ctx.state.iteration})
        await self.ctx.add_message("assistant", text)
        return TurnResult(texts=[text])

    async def _usage_event(self, trigger: str) -> None:
        self.ctx.emitter.post("context_usage_updated", self._usage_data(trigger))

    def _usage_data(self, trigger: str) -> dict[str, Any]:
        ctx = self.ctx
        estimated = ctx.state.last_input_tokens or ctx.state.estimated_tokens(ctx.hooks.system_prompt())
        budget = ctx.config.max_context_tokens
        ratio = estimated / budget if budget else 0.0
        return {"usage_ratio": round(ratio, 4), "usage_pct": round(ratio * 100, 1),
                "message_count": len(ctx.state.messages), "estimated_tokens": estimated,
                "max_context_tokens": budget, "trigger": trigger}

    # -- after the turn --------------------------------------------------------------------------

    async def _judge(self, result: TurnResult) -> bool:
        """Checks of SPEC B 3.6, cursor and checkpoint, then: True when the run is accepted."""
        ctx = self.ctx
        state = ctx.state
        fails: str | None = None
        if not result.cancelled:
            fails = await self._detect(result)
        if ctx.role == "queen":
            self._parked = result.cancelled or not result.real_calls or result.asked or fails is not None
            if self._parked:
                state.pending_input = {"questions": None, "emit_client_request": True}
        else:
            state.accepted = fails is None and result.set_output and not result.tool_failed
        await ctx.save_cursor()
        await ctx.hooks.after_iteration(ctx, "loop_iteration")
        if ctx.role == "queen":
            return False
        if fails is not None:
            raise LoopFailed(fails)
        if state.accepted:
            return True
        if not result.real_calls and not result.asked and not result.set_output and not result.cancelled:
            state.text_only_streak += 1
            if state.text_only_streak > 1:
                state.text_only_streak = 0
                await escalate(ctx, TEXT_ONLY_ESCALATION)
        else:
            state.text_only_streak = 0
        return False

    async def _detect(self, result: TurnResult) -> str | None:
        ctx = self.ctx
        state = ctx.state
        window = ctx.config.stall_detection_threshold
        if result.is_empty:
            state.empty_streak += 1
            if state.empty_streak >= window:
                state.empty_streak = 0
                return "Ghost empty stream" if ctx.role == "worker" else "empty responses"
            await ctx.add_message("user", "[Your last response was empty. Continue the task or call a tool.]",
                                  is_system_nudge=True)
            return None
        state.empty_streak = 0
        state.recent_responses = [*state.recent_responses, result.text][-window:]
        state.recent_tool_fingerprints = [*state.recent_tool_fingerprints,
                                          detectors.fingerprint(result.real_calls)][-window:]
        if not result.real_calls:
            state.recent_tool_fingerprints = []
        if ctx.role == "worker" and detectors.is_stalled(state.recent_responses, window):
            await ctx.emitter.emit("node_stalled", {"reason": "Consecutive similar responses detected"})
            return f"Node stalled: {window} similar responses (85+ threshold)"
        if detectors.is_doom_loop(state.recent_tool_fingerprints, window):
            state.recent_tool_fingerprints = []
            await ctx.emitter.emit("node_tool_doom_loop", {
                "description": f"The same tool calls were repeated {window} turns in a row"})
            if ctx.role == "worker":
                await escalate(ctx, "Doom loop detected: the same tool calls repeated")
            else:
                await ctx.add_message("user", "[Warning: you repeated the same tool calls. Stop and ask the user.]",
                                      is_system_nudge=True)
                return "doom loop"
        return None
