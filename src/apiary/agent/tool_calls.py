"""Running the tool calls of one model response (SPEC B 3.4).

Every call gets exactly one result message, also on timeout, error or cancellation. Before a
call runs, its intent is recorded under an idempotency key (``call:<id>``); its result under
``tool:<id>``. On resume a recorded result is reused; a call with an intent but no result has an
unknown outcome and is re-run only when the tool is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from apiary.agent.builtins import BUILTIN_NAMES, run_builtin
from apiary.agent.context import RunContext
from apiary.core.errors import ToolRetry
from apiary.core.messages import ToolCall
from apiary.tools.base import ToolOutput

logger = logging.getLogger(__name__)

CANCELLED_RESULT = "[Tool call cancelled by user]"
UNKNOWN_OUTCOME = ("[Outcome unknown: this call was interrupted before its result was stored and was not run "
                   "again, since the tool is not idempotent. Check its effects before retrying.]")


@dataclass
class CallOutcome:
    call: ToolCall
    output: ToolOutput


async def _execute(ctx: RunContext, call: ToolCall) -> ToolOutput:
    if call.name in BUILTIN_NAMES:
        return await run_builtin(ctx, call.name, call.arguments)
    tool = ctx.hooks.tools().get(call.name)
    if tool is None:
        return ToolOutput(f"Unknown tool '{call.name}'", is_error=True)
    if "_raw_arguments" in call.arguments:
        return ToolOutput(f"Malformed arguments for '{call.name}': expected a JSON object", is_error=True)
    timeout = ctx.config.tool_call_timeout_seconds
    own = call.arguments.get("timeout_seconds")
    if isinstance(own, int | float) and not isinstance(own, bool):
        timeout = max(timeout, min(float(own), 600.0) + 5.0)   # a command's own limit wins, so its output is kept
    try:
        async with asyncio.timeout(timeout):
            return await tool.call(call.arguments, ctx.tool_context)
    except TimeoutError:
        return ToolOutput(f"Tool '{call.name}' timed out after {timeout:g}s", is_error=True)
    except ToolRetry as exc:
        return ToolOutput(str(exc), is_error=True)
    except Exception as exc:  # a tool's bug must not kill the loop: the model sees the failure
        logger.exception("tool %s failed", call.name)
        return ToolOutput(f"Tool '{call.name}' failed: {exc}", is_error=True)


async def _run_one(ctx: RunContext, call: ToolCall, *, stage_result: bool = False) -> ToolOutput:
    """Run one call (or reuse its recorded result). With ``stage_result`` its recorded result is only
    staged: the caller stores it with the result message, in the same write."""
    recorded = ctx.recorded_value(f"tool:{call.id}")
    if recorded is not None:
        return ToolOutput(str(recorded.get("content", "")), bool(recorded.get("is_error")))
    if ctx.replay == "recorded":
        from apiary.agent.model_call import NoRecording

        raise NoRecording(f"no recorded response for step {ctx.state.iteration}")
    intent = ctx.recorded_value(f"call:{call.id}")
    tool = ctx.hooks.tools().get(call.name)
    if intent is not None and tool is not None and not tool.is_idempotent:
        return ToolOutput(UNKNOWN_OUTCOME, is_error=True)
    await ctx.record(f"call:{call.id}", {"name": call.name, "args": call.arguments})
    output = await _execute(ctx, call)
    output = ToolOutput(clean_text(output.content), output.is_error)
    if not output.is_error and tool is not None and ctx.tool_context.spillover_dir is not None:
        output = ToolOutput(await _spill(ctx, call.name, output.content))
    ctx.stage_record(f"tool:{call.id}", {"content": output.content, "is_error": output.is_error})
    if not stage_result:
        await ctx.flush()
    return output


async def _spill(ctx: RunContext, name: str, content: str) -> str:
    if len(content) <= ctx.config.max_tool_result_chars and name != "read_file":
        return content
    from apiary.tools.spillover import spill_large_result

    return await asyncio.to_thread(spill_large_result, name, content, spillover_dir=ctx.tool_context.spillover_dir,
                                   max_chars=ctx.config.max_tool_result_chars)


def clean_text(text: str) -> str:
    """Text any store can hold: lone surrogates (e.g. undecodable file names) become ``\\udcff`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


async def _finish(ctx: RunContext, call: ToolCall, output: ToolOutput, done: dict[str, CallOutcome]) -> None:
    """Give the call its one result. The call counts as done before the first await, and storing and
    announcing the result is shielded, so a cancel landing here can neither cut the result short nor
    make ``_stub_unfinished`` add a second one."""
    output = ToolOutput(clean_text(output.content), output.is_error)
    done[call.id] = CallOutcome(call, output)
    await asyncio.shield(_store_result(ctx, call, output))


async def _store_result(ctx: RunContext, call: ToolCall, output: ToolOutput) -> None:
    ctx.stage_message("tool", output.content, tool_use_id=call.id, is_error=output.is_error)
    await ctx.flush()   # with the recorded result staged by ``_run_one``, when there is one
    ctx.emitter.post("tool_call_completed", {"tool_use_id": call.id, "tool_name": call.name,
                                             "result": output.content[:2000], "is_error": output.is_error})


def _limit_error(ctx: RunContext, index: int) -> str | None:
    per_turn = ctx.config.max_tool_calls_per_turn
    if per_turn and index >= int(per_turn * 1.5):
        return f"Tool call limit per turn ({per_turn}) exceeded: this call was not run"
    total = ctx.config.max_tool_calls
    if total is not None and ctx.state.tool_calls_used >= total:
        return f"Tool call budget exhausted ({total} calls)"
    return None


def _all_parallel(ctx: RunContext, calls: list[ToolCall]) -> bool:
    tools = ctx.hooks.tools()
    found = [tools.get(c.name) for c in calls]
    return len(calls) > 1 and all(t is not None and t.is_concurrency_safe for t in found)


async def run_tool_calls(ctx: RunContext, calls: list[ToolCall]) -> list[CallOutcome]:
    outcomes: dict[str, CallOutcome] = {}
    # Posted (Emitter.post): stored in order before anything the tools' results are stored with.
    ctx.emitter.post_many([("tool_call_started", {"tool_use_id": call.id, "tool_name": call.name,
                                                  "tool_input": call.arguments}) for call in calls])
    try:
        if _all_parallel(ctx, calls):
            results = await asyncio.gather(*(_run_one(ctx, c) for c in calls))
            ctx.state.tool_calls_used += len(calls)
            for call, output in zip(calls, results, strict=True):
                await _finish(ctx, call, output, outcomes)
        else:
            failed = False
            for index, call in enumerate(calls):
                error = _limit_error(ctx, index)
                if error is not None:
                    output = ToolOutput(error, is_error=True)
                elif failed:
                    output = ToolOutput("Not run: an earlier tool call of this turn failed", is_error=True)
                else:
                    ctx.state.tool_calls_used += 1
                    # the recorded result is stored by ``_finish``, with its message: nothing awaits in between
                    output = await _run_one(ctx, call, stage_result=True)
                    failed = output.is_error and call.name not in BUILTIN_NAMES
                await _finish(ctx, call, output, outcomes)
    except asyncio.CancelledError:
        await asyncio.shield(_stub_unfinished(ctx, calls, outcomes))
        raise
    return [outcomes[c.id] for c in calls]


async def _stub_unfinished(ctx: RunContext, calls: list[ToolCall], done: dict[str, CallOutcome]) -> None:
    for call in calls:
        if call.id not in done:
            await _finish(ctx, call, ToolOutput(CANCELLED_RESULT, is_error=True), done)


def args_text(call: ToolCall) -> str:
    return json.dumps(call.arguments, ensure_ascii=False)
