"""What a run is given (``LoopConfig``) apart from what changes and is checkpointed (``RunState``).

``RunState.cursor()`` is the cursor of SPEC B 3.9; ``RunState.from_cursor`` restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apiary.core.messages import JsonObject


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 2.0
    max_s: float = 60.0
    capacity_window_s: float = 600.0   # rate limits and overloads are retried this long

    def delay(self, attempt: int) -> float:
        return min(self.base_s * (2**attempt), self.max_s)


@dataclass(frozen=True)
class LoopConfig:
    max_iterations: int = 50
    max_tool_calls_per_turn: int = 30
    max_tool_calls: int | None = None
    max_context_tokens: int = 32000
    max_tool_result_chars: int = 30000
    stall_detection_threshold: int = 3
    tool_call_timeout_seconds: float = 60.0
    max_tokens: int = 8192
    retry: RetryPolicy = RetryPolicy()

    @staticmethod
    def from_json(raw: JsonObject | None, *, base: LoopConfig | None = None) -> LoopConfig:
        """Loop settings from ``worker.json`` ``loop_config``; missing keys keep ``base``'s values."""
        cfg = base or LoopConfig()
        raw = raw or {}
        values: dict[str, Any] = {}
        for key in ("max_iterations", "max_tool_calls_per_turn", "max_tool_calls", "max_context_tokens",
                    "max_tool_result_chars", "stall_detection_threshold"):
            if isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool):
                values[key] = raw[key]
        if isinstance(raw.get("tool_call_timeout_seconds"), int | float):
            values["tool_call_timeout_seconds"] = float(raw["tool_call_timeout_seconds"])
        return LoopConfig(**{**cfg.__dict__, **values})


QUEEN_LOOP = LoopConfig(max_iterations=999999, max_context_tokens=180000)


@dataclass
class RunState:
    messages: list[JsonObject] = field(default_factory=list)
    next_seq: int = 0
    iteration: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    recent_responses: list[str] = field(default_factory=list)
    recent_tool_fingerprints: list[list[list[Any]]] = field(default_factory=list)
    pending_input: JsonObject | None = None
    text_only_streak: int = 0
    empty_streak: int = 0
    silent_tool_streak: int = 0
    tool_calls_used: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    last_input_tokens: int = 0
    compaction_failures: int = 0
    accepted: bool = False   # the iteration just judged ended the run; a resume from it has nothing to do
    # The size of ``messages`` so far: (the list, how many of it are counted, their weight, the last one
    # counted). Messages are only ever appended to the list or the list is replaced (compaction,
    # restore), so the estimate adds the new tail's weight instead of walking the conversation.
    _tally: tuple[list[JsonObject], int, int, JsonObject | None] | None = field(default=None, repr=False,
                                                                               compare=False)

    def estimated_tokens(self, system: str = "") -> int:
        """``context_budget.estimate_tokens(messages, system)``, in O(new messages)."""
        from apiary.agent.context_budget import message_weight

        messages = self.messages
        tally = self._tally
        start, total = 0, 0
        if tally is not None and tally[0] is messages and len(messages) >= tally[1] > 0 \
                and messages[tally[1] - 1] is tally[3]:
            start, total = tally[1], tally[2]
        for message in messages[start:]:
            total += message_weight(message)
        self._tally = (messages, len(messages), total, messages[-1] if messages else None)
        return (len(system) + total) // 4

    def forget_sizes(self) -> None:
        """After the messages were changed in place: the next estimate measures them all again."""
        self._tally = None

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def cursor(self, node_id: str) -> JsonObject:
        return {
            "next_seq": self.next_seq,
            "iteration": self.iteration,
            "node_id": node_id,
            "outputs": self.outputs,
            "recent_responses": self.recent_responses,
            "recent_tool_fingerprints": self.recent_tool_fingerprints,
            "pending_input": self.pending_input,
            "text_only_streak": self.text_only_streak,
            "tool_calls_used": self.tool_calls_used,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "last_input_tokens": self.last_input_tokens,
            "accepted": self.accepted,
        }

    def restore_cursor(self, cursor: JsonObject) -> None:
        def num(key: str) -> int:
            value = cursor.get(key, 0)
            return value if isinstance(value, int) else 0

        self.iteration = num("iteration")
        self.outputs = dict(cursor.get("outputs") or {})
        self.recent_responses = list(cursor.get("recent_responses") or [])
        self.recent_tool_fingerprints = list(cursor.get("recent_tool_fingerprints") or [])
        pending = cursor.get("pending_input")
        self.pending_input = pending if isinstance(pending, dict) else None
        self.text_only_streak = num("text_only_streak")
        self.tool_calls_used = num("tool_calls_used")
        self.input_tokens = num("input_tokens")
        self.output_tokens = num("output_tokens")
        self.last_input_tokens = num("last_input_tokens")
        if isinstance(cursor.get("next_seq"), int):
            self.next_seq = cursor["next_seq"]
