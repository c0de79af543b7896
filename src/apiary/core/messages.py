"""Conversation messages as stored (SPEC B 6.3) and tool specs.

A message is a plain dict on the wire and in storage; ``Message`` is the typed view the loop
builds. Only fields that are set (or true) are kept in the stored form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]
JsonObject = dict[str, Any]

_OPTIONAL_FIELDS = (
    "tool_use_id",
    "tool_calls",
    "is_error",
    "phase_id",
    "is_transition_marker",
    "is_client_input",
    "image_content",
    "run_id",
    "is_system_nudge",
    "truncated",
    "inherited_from",
    "is_trigger",
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: JsonObject

    def to_wire(self) -> JsonObject:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }

    @staticmethod
    def from_wire(raw: JsonObject) -> ToolCall:
        fn = raw.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = {}
        return ToolCall(str(raw.get("id", "")), str(fn.get("name", "")), args if isinstance(args, dict) else {})


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: JsonObject = field(default_factory=lambda: {"type": "object", "properties": {}})


def make_message(seq: int, role: Role, content: str, **extra: Any) -> JsonObject:
    """A stored message: ``seq``, ``role``, ``content`` plus the optional fields that are set."""
    msg: JsonObject = {"seq": seq, "role": role, "content": content}
    for key in _OPTIONAL_FIELDS:
        value = extra.get(key)
        if value not in (None, False, [], ""):
            msg[key] = value
    return msg


def is_well_formed(msg: object) -> bool:
    return (
        isinstance(msg, dict)
        and isinstance(msg.get("seq"), int)
        and msg.get("role") in ("user", "assistant", "tool")
        and isinstance(msg.get("content"), str)
    )


def tool_calls_of(msg: JsonObject) -> list[ToolCall]:
    return [ToolCall.from_wire(raw) for raw in msg.get("tool_calls") or []]
