"""Events as published on a session bus and stored in its log (SPEC B 5).

Values apart from identity: an ``Event`` has no id; the log assigns one on append and hands back
a ``StoredEvent``. The wire form always carries every envelope field (null when unset) and
``run_id`` only when set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from apiary.core.jsonfile import dumps

# Events a client must never miss (SPEC B 5).
CRITICAL_TYPES: Final = frozenset(
    {
        "execution_started",
        "execution_completed",
        "execution_failed",
        "execution_paused",
        "client_input_requested",
        "client_input_received",
        "node_loop_started",
        "node_loop_iteration",
        "credentials_required",
        "worker_graph_loaded",
        "worker_colony_loaded",
        "queen_phase_changed",
    }
)

TRIGGER_TYPES: Final = (
    "trigger_available",
    "trigger_activated",
    "trigger_deactivated",
    "trigger_fired",
    "trigger_removed",
    "trigger_updated",
)

# The default set of an SSE stream without ``types`` (SPEC A 4.1).
DEFAULT_STREAM_TYPES: Final = frozenset(
    {
        "client_output_delta",
        "client_input_requested",
        "client_input_received",
        "llm_text_delta",
        "tool_call_started",
        "tool_call_completed",
        "execution_started",
        "execution_completed",
        "execution_failed",
        "execution_paused",
        "node_loop_started",
        "node_loop_iteration",
        "node_loop_completed",
        "llm_turn_complete",
        "node_action_plan",
        "goal_progress",
        "node_internal_output",
        "node_stalled",
        "node_retry",
        "node_tool_doom_loop",
        "context_compacted",
        "context_usage_updated",
        "worker_colony_loaded",
        "colony_created",
        "credentials_required",
        "subagent_report",
        "queen_phase_changed",
        *TRIGGER_TYPES,
    }
)

# Replayed to a stream opened without a resume point (SPEC A 4.3).
REPLAY_TYPES: Final = frozenset(
    {"client_output_delta", "execution_started", "client_input_requested", "client_input_received", *TRIGGER_TYPES}
)

TEXT_DELTA_TYPES: Final = frozenset({"client_output_delta", "llm_text_delta"})


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    stream_id: str | None = None
    node_id: str | None = None
    execution_id: str | None = None
    timestamp: str = ""
    correlation_id: str | None = None
    colony_id: str | None = None
    run_id: str | None = None

    def to_wire(self, event_id: int | None = None) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if event_id is not None:
            wire["id"] = event_id
        wire.update(
            type=self.type,
            stream_id=self.stream_id,
            node_id=self.node_id,
            execution_id=self.execution_id,
            data=self.data,
            timestamp=self.timestamp,
            correlation_id=self.correlation_id,
            colony_id=self.colony_id,
        )
        if self.run_id:
            wire["run_id"] = self.run_id
        return wire

    @staticmethod
    def from_wire(raw: dict[str, Any]) -> Event:
        return Event(
            type=str(raw.get("type", "")),
            data=raw.get("data") or {},
            stream_id=raw.get("stream_id"),
            node_id=raw.get("node_id"),
            execution_id=raw.get("execution_id"),
            timestamp=str(raw.get("timestamp", "")),
            correlation_id=raw.get("correlation_id"),
            colony_id=raw.get("colony_id"),
            run_id=raw.get("run_id"),
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    event: Event
    # The JSON text of the wire form, computed once on append and reused by every reader.
    json_text: str

    @staticmethod
    def of(event_id: int, event: Event) -> StoredEvent:
        return StoredEvent(event_id, event, dumps(event.to_wire(event_id)))

    @property
    def type(self) -> str:
        return self.event.type


def delta_key(stored: StoredEvent) -> tuple[Any, ...]:
    """What ``collapse_text_deltas`` keeps one text delta per; the event logs' ``count_collapsed``
    computes the same key in SQL (a missing field and JSON null are one value)."""
    ev = stored.event
    return ev.type, ev.stream_id, ev.node_id, ev.execution_id, ev.data.get("iteration"), ev.data.get("inner_turn")


def collapse_text_deltas(events: list[StoredEvent]) -> list[StoredEvent]:
    """Keep only the last text delta per (stream, node, execution, iteration, inner turn)."""
    last: dict[tuple[Any, ...], int] = {}
    for index, stored in enumerate(events):
        if stored.type in TEXT_DELTA_TYPES:
            last[delta_key(stored)] = index
    keep = set(last.values())
    return [s for i, s in enumerate(events) if s.type not in TEXT_DELTA_TYPES or i in keep]
