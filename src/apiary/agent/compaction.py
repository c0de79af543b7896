"""Model compaction of a conversation into one summary (SPEC B 9).

Messages are rendered as short text blocks; a rendering longer than the character limit is split
in halves, each summarised recursively, and the halves joined. With ``preserve_user_messages``
every user message must appear verbatim, in order, labelled ``[U1]``, ``[U2]``, ...
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from apiary.core.errors import ProviderError
from apiary.core.messages import JsonObject, tool_calls_of
from apiary.llm.base import LLMProvider, ModelRequest

CHAR_LIMIT = 240_000
RECURSION_LIMIT = 10
SECTIONS = ("Primary request and intent", "Key technical concepts", "Files and code", "Errors and fixes",
            "Problem solving", "User messages", "Pending tasks", "Current work")


def render(messages: list[JsonObject]) -> str:
    blocks = []
    for msg in messages:
        content = str(msg.get("content", ""))
        if msg.get("image_content"):
            content += " [image]"
        if msg["role"] == "tool":
            content = content[:500]
        calls = tool_calls_of(msg)
        if calls:
            content = content[:200] + " (tools: " + ", ".join(c.name for c in calls) + ")"
        blocks.append(f"[{msg['role']}]: {content}")
    return "\n\n".join(blocks)


def user_messages(messages: list[JsonObject]) -> list[str]:
    return [str(m.get("content", "")) for m in messages
            if m["role"] == "user" and not m.get("is_system_nudge") and not m.get("inherited_from")]


def _instructions(max_context_tokens: int, preserve: list[str] | None, first_label: int = 1) -> str:
    target = max_context_tokens // 2 * 4
    lines = [f"Summarise the conversation below in about {target} characters, in these sections: "
             + "; ".join(SECTIONS) + "."]
    if preserve is not None:
        lines.append("Every user message must appear verbatim and in order, labelled [U1], [U2], ...:")
        lines += [f"[U{i}] {text}" for i, text in enumerate(preserve, start=first_label)]
    else:
        lines.append("Keep rules, constraints and identity details verbatim.")
    return "\n".join(lines)


def split_index(messages: list[JsonObject]) -> int | None:
    """Where to cut ``messages`` in two, as near the middle as possible without separating a tool call
    from any of its results; None when every cut would."""
    n = len(messages)
    calls: dict[str, int] = {}
    blocked = [0] * (n + 1)   # difference array over the cut positions 1..n-1
    for j, msg in enumerate(messages):
        for call in tool_calls_of(msg):
            calls.setdefault(call.id, j)
        if msg["role"] == "tool":
            c = calls.get(str(msg.get("tool_use_id")))
            if c is not None and c < j:
                blocked[c + 1] += 1   # cuts c+1..j would put the call and this result apart
                blocked[j + 1] -= 1
    open_cuts: list[int] = []
    depth = 0
    for i in range(1, n):
        depth += blocked[i]
        if depth == 0:
            open_cuts.append(i)
    if not open_cuts:
        return None
    return min(open_cuts, key=lambda i: (abs(2 * i - n), i))


def facts_block(messages: list[JsonObject]) -> str:
    """TOOLS ALREADY CALLED / FILES SAVED / OUTPUTS SET / ERRORS, from the messages themselves."""
    counts: Counter[str] = Counter()
    previews: dict[str, list[str]] = {}
    files: list[str] = []
    outputs: list[str] = []
    for msg in messages:
        for call in tool_calls_of(msg):
            counts[call.name] += 1
            args = json.dumps(call.arguments, ensure_ascii=False)[:80]
            previews.setdefault(call.name, []).append(args)
            if call.name in ("write_file", "edit_file") and "path" in call.arguments:
                files.append(str(call.arguments["path"]))
            if call.name == "set_output":
                outputs.append(str(call.arguments.get("key")))
    errors = [str(m.get("content", ""))[:200] for m in messages if m["role"] == "tool" and m.get("is_error")][-10:]
    parts = ["TOOLS ALREADY CALLED:"] + [f"- {n} x{c}: " + "; ".join(previews[n][:3]) for n, c in counts.items()]
    parts += ["FILES SAVED:"] + [f"- {f}" for f in dict.fromkeys(files)]
    parts += ["OUTPUTS SET:"] + [f"- {o}" for o in dict.fromkeys(outputs)]
    parts += ["ERRORS (do NOT retry these):"] + [f"- {e}" for e in errors]
    return "\n".join(parts)


async def summarise(llm: LLMProvider, messages: list[JsonObject], *, max_context_tokens: int = 180_000,
                    preserve_user_messages: bool = False, char_limit: int = CHAR_LIMIT, _depth: int = 0,
                    _first_label: int = 1) -> str:
    text = render(messages)
    if len(text) > char_limit and len(messages) > 1 and _depth < RECURSION_LIMIT:
        half = split_index(messages)
        if half is not None:
            return await _split(llm, messages, half, max_context_tokens, preserve_user_messages, char_limit, _depth,
                                _first_label)
    preserve = user_messages(messages) if preserve_user_messages else None
    request = ModelRequest(messages=[{"seq": 0, "role": "user", "content": text}],
                           system=_instructions(max_context_tokens, preserve, _first_label),
                           max_tokens=max(1024, max_context_tokens // 2))
    try:
        response = await llm.acomplete(request)
    except ProviderError as exc:
        half = split_index(messages) if len(messages) > 1 and _depth < RECURSION_LIMIT else None
        if "context" in str(exc).lower() and half is not None:
            return await _split(llm, messages, half, max_context_tokens, preserve_user_messages, char_limit, _depth,
                                _first_label)
        raise
    summary = response.content.strip()
    if _depth == 0 and "TOOLS ALREADY CALLED:" not in summary:
        summary += "\n\n" + facts_block(messages)
    return summary


async def _split(llm: LLMProvider, messages: list[JsonObject], half: int, budget: int, preserve: bool, limit: int,
                 depth: int, first_label: int) -> str:
    """Summarise ``messages[:half]`` and ``messages[half:]`` and join them; user-message labels go on
    counting across the halves, so the joined summary still reads [U1], [U2], ... in order."""
    first = await summarise(llm, messages[:half], max_context_tokens=budget, preserve_user_messages=preserve,
                            char_limit=limit, _depth=depth + 1, _first_label=first_label)
    second = await summarise(llm, messages[half:], max_context_tokens=budget, preserve_user_messages=preserve,
                             char_limit=limit, _depth=depth + 1,
                             _first_label=first_label + len(user_messages(messages[:half])))
    joined = first + "\n\n" + second
    return joined + ("\n\n" + facts_block(messages) if depth == 0 else "")


def summary_message(summary: str, *, inherited_from: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"seq": 0, "role": "user", "content": summary}
    if inherited_from:
        msg["inherited_from"] = inherited_from
    return msg
