"""The demo model: offline, deterministic, and plainly labelled (SPEC B 11).

It answers from the request alone, so the same request always gives the same response. It acts
on directives in the newest user message (and, for workers, in the task goal), one per line:

    demo:tool <name> <json args>   call a tool (one call per line)
    demo:ask <question>            ask the user (ask_user with two options)
    demo:escalate <reason>         escalate to the queen (workers)
    demo:fail <message>            fail with a permanent provider error
    demo:delay <ms>                pause <ms> between streamed words (to watch or stop a turn)

A worker (a request offering ``set_output``) with no directives left calls ``set_output`` once
(key ``result``) and then closes with a short text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from apiary.core.errors import ProviderError
from apiary.core.messages import JsonObject
from apiary.llm.base import ModelRequest, ModelResponse
from apiary.llm.fake import FunctionLLM, Turn

NAME = "demo"
_DIRECTIVE = re.compile(r"(?:^|(?<=\s))demo:(tool|ask|escalate|fail|delay)\b[ \t]*(.*)$", re.MULTILINE)
_USER_LINE = re.compile(r"^\[U\d+\] ", re.MULTILINE)
_STAMP = re.compile(r"^\[[^\]]*\]\s*(\[External event\]\s*)?")


@dataclass
class Directives:
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ask: str | None = None
    escalate: str | None = None
    fail: str | None = None
    delay_s: float = 0.0


def parse_directives(text: str) -> Directives:
    found = Directives()
    for kind, rest in _DIRECTIVE.findall(text):
        rest = rest.strip()
        if kind == "tool" and rest:
            name, _, raw = rest.partition(" ")
            try:
                args = json.loads(raw) if raw.strip() else {}
            except ValueError:
                args = {"_raw_arguments": raw}
            found.tools.append((name, args if isinstance(args, dict) else {"value": args}))
        elif kind == "ask":
            found.ask = rest or "How should I go on?"
        elif kind == "escalate":
            found.escalate = rest or "I need guidance."
        elif kind == "fail":
            found.fail = rest or "demo failure"
        elif kind == "delay":
            try:
                found.delay_s = max(0.0, min(float(rest.split()[0]) / 1000.0, 10.0))
            except (ValueError, IndexError):
                pass
    return found


def _plain(text: str) -> str:
    return _STAMP.sub("", text.strip()).strip()


def _last_user(messages: list[JsonObject]) -> JsonObject | None:
    for msg in reversed(messages):
        if msg.get("role") == "user" and not msg.get("is_system_nudge"):
            return msg
    return None


def _called(messages: list[JsonObject], since: int = 0) -> list[str]:
    names: list[str] = []
    for msg in messages[since:]:
        for call in msg.get("tool_calls") or []:
            names.append(str((call.get("function") or {}).get("name", "")))
    return names


def _last_tool_result(messages: list[JsonObject]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "tool":
            return str(msg.get("content", ""))
    return ""


class DemoLLM(FunctionLLM):
    """Deterministic offline model; see the module docstring for its directives."""

    def __init__(self, *, keep_requests: bool = False) -> None:
        # A server runs it for days: by default it keeps no requests (tests may ask it to).
        super().__init__(self._respond, model=NAME, keep_requests=keep_requests)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """A deterministic summary listing every user message the request names verbatim."""
        self._record(request)
        users = [line for line in request.system.splitlines() if _USER_LINE.match(line)]
        text = "Summary written by the demo model (offline).\nUser messages:\n" + ("\n".join(users) or "(none)")
        return ModelResponse(content=text, model=NAME, input_tokens=len(request.system) // 4,
                             output_tokens=len(text) // 4)

    def _respond(self, request: ModelRequest) -> Turn:
        tool_names = {t.name for t in request.tools}
        if "set_output" in tool_names:
            return self._worker(request)
        return self._queen(request)

    def _queen(self, request: ModelRequest) -> Turn:
        messages = request.messages
        user = _last_user(messages)
        text = _plain(str(user.get("content", ""))) if user else ""
        found = parse_directives(text)
        after_tools = bool(messages) and messages[-1].get("role") == "tool"
        if messages and messages[-1].get("is_system_nudge"):
            return Turn(text="[demo model] Done: nothing more to do until you write again.")
        if found.fail and not after_tools:
            raise ProviderError(f"demo:fail {found.fail}", retryable=False)
        if after_tools:
            result = _last_tool_result(messages)
            preview = result[:200] + ("…" if len(result) > 200 else "")
            return Turn(text=f"[demo model] The tool answered: {preview}", delay_s=found.delay_s)
        raw = str(user.get("content", "")) if user else ""
        if "[External event]" in raw or (user or {}).get("is_trigger"):
            first = text.splitlines()[0] if text else ""
            return Turn(text=f"[demo model] Noted: {first[:160]}", delay_s=found.delay_s)
        if found.tools:
            return Turn(
                text="[demo model] Running the requested tools.",
                tool_calls=found.tools,
                delay_s=found.delay_s,
            )
        if found.ask:
            return Turn(
                text="[demo model] I have a question.",
                delay_s=found.delay_s,
                tool_calls=[
                    ("ask_user", {"questions": [{"id": "q1", "prompt": found.ask, "options": ["Yes", "No"]}]})
                ],
            )
        return Turn(text=self._reply(text, user), delay_s=found.delay_s)

    @staticmethod
    def _reply(text: str, user: JsonObject | None) -> str:
        if not text or text == "Hello":
            return (
                "Hello! I am apiary's demo model: offline and deterministic, no API key needed. "
                "Start the server with --model openai:<name> or anthropic:<name> for a real one."
            )
        excerpt = " ".join(text.split()[:24])
        images = len((user or {}).get("image_content") or [])
        seen = f" I also received {images} image(s)." if images else ""
        return (
            f'This is the demo model answering offline. You said: "{excerpt}".{seen} '
            "Write demo:tool <name> <json> on a line of its own to see a tool run end to end."
        )

    def _worker(self, request: ModelRequest) -> Turn:
        messages = request.messages
        goal = _plain(str(messages[0].get("content", ""))) if messages else ""
        latest = _last_user(messages)
        found = parse_directives(goal)
        if latest is not None and latest is not messages[0]:
            extra = parse_directives(_plain(str(latest.get("content", ""))))
            found.tools += extra.tools
            found.fail = found.fail or extra.fail
        called = _called(messages)
        if found.fail:
            raise ProviderError(f"demo:fail {found.fail}", retryable=False)
        pending = [(n, a) for n, a in found.tools if n not in called]
        if pending:
            return Turn(text="[demo model] Working on the task.", tool_calls=pending, delay_s=found.delay_s)
        if found.ask and "ask_user" not in called:
            question = {"id": "q1", "prompt": found.ask, "options": ["Proceed", "Stop"]}
            return Turn(text="", tool_calls=[("ask_user", {"questions": [question]})], delay_s=found.delay_s)
        if found.escalate and "escalate" not in called:
            return Turn(text="", tool_calls=[("escalate", {"reason": found.escalate})], delay_s=found.delay_s)
        if "set_output" not in called:
            summary = goal.splitlines()[-1][:200] if goal else "the task"
            value = f"demo result for: {summary}"
            return Turn(
                text="[demo model] Recording the result.",
                delay_s=found.delay_s,
                tool_calls=[("set_output", {"key": "result", "value": value})],
            )
        return Turn(text="[demo model] Task complete.", delay_s=found.delay_s)
