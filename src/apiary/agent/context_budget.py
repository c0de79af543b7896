"""Pure helpers for compaction inside the loop (SPEC B 3.8): estimates, thresholds and the cheap
passes. Nothing here does I/O, and no pass ever separates a tool call from its result."""

from __future__ import annotations

from dataclasses import dataclass

from apiary.core.messages import JsonObject, tool_calls_of

IMAGE_TOKENS = 2000
PRUNED = "[Old tool result pruned to save context: {n} characters. Call the tool again if you need it.]"


def message_weight(message: JsonObject) -> int:
    """A message's size in characters, images counted as 4 x 2000 characters."""
    return (len(str(message.get("content", ""))) + len(str(message.get("tool_calls") or ""))
            + 4 * IMAGE_TOKENS * len(message.get("image_content") or []))


def estimate_tokens(messages: list[JsonObject], system: str = "", weights: dict[int, tuple[int, int]] | None = None
                    ) -> int:
    """Characters / 4, plus 2000 per image; no tokenizer download. ``weights`` caches each message's
    size by ``seq`` (checked against the object's identity, so a replaced message is measured again)."""
    total = len(system)
    for message in messages:
        if weights is None:
            total += message_weight(message)
            continue
        cached = weights.get(message["seq"])
        if cached is None or cached[0] != id(message):
            cached = (id(message), message_weight(message))
            weights[message["seq"]] = cached
        total += cached[1]
    return total // 4


def compaction_threshold(max_context_tokens: int) -> int:
    return max_context_tokens - (8000 + int(0.15 * max_context_tokens))


def needs_compaction(estimated: int, max_context_tokens: int) -> bool:
    return max_context_tokens > 0 and estimated >= compaction_threshold(max_context_tokens)


def safe_cut(messages: list[JsonObject], keep: int) -> int:
    """Index where the kept tail starts: at most ``keep`` messages, never starting inside a tool pair."""
    cut = max(0, len(messages) - keep)
    while 0 < cut < len(messages) and messages[cut]["role"] == "tool":
        cut -= 1
    return cut


def is_paired(messages: list[JsonObject]) -> bool:
    """Every tool result follows the assistant message that called it, and every call has a result."""
    open_calls: set[str] = set()
    for msg in messages:
        if msg["role"] == "tool":
            if msg.get("tool_use_id") not in open_calls:
                return False
            open_calls.discard(msg.get("tool_use_id"))
        else:
            if open_calls:
                return False
            open_calls = {c.id for c in tool_calls_of(msg)}
    return not open_calls


@dataclass(frozen=True)
class PruneResult:
    messages: list[JsonObject]
    pruned: int


def prune_old_results(messages: list[JsonObject], *, protect_tokens: int, min_chars: int = 200) -> PruneResult:
    """Shorten tool results older than the newest ``protect_tokens`` tokens; pairs stay intact."""
    protected = 0
    boundary = len(messages)
    for index in range(len(messages) - 1, -1, -1):
        protected += len(str(messages[index].get("content", ""))) // 4
        if protected > protect_tokens:
            boundary = index
            break
    else:
        return PruneResult(list(messages), 0)
    out: list[JsonObject] = []
    pruned = 0
    for index, msg in enumerate(messages):
        content = str(msg.get("content", ""))
        if index < boundary and msg["role"] == "tool" and len(content) > min_chars and not msg.get("is_error"):
            msg = {**msg, "content": PRUNED.format(n=len(content))}
            pruned += 1
        out.append(msg)
    return PruneResult(out, pruned)
