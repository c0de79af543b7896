"""A live session: one queen, her phase, the lock fields and (later) a loaded colony."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from apiary.agent.budget import Budget, Limits
from apiary.core.clock import utc_iso
from apiary.core.events import Event
from apiary.core.messages import JsonObject
from apiary.llm.base import LLMProvider
from apiary.sessions.deps import SessionDeps
from apiary.sessions.files import StoredSession
from apiary.sessions.phases import PHASE_TOOLS
from apiary.sessions.profiles import QueenProfile
from apiary.sessions.queen import QueenRunner
from apiary.tools.base import Toolset
from apiary.tools.mcp_registry import McpRegistry, toolset_with

logger = logging.getLogger(__name__)


class Session:
    def __init__(self, *, deps: SessionDeps, stored: StoredSession, profile: QueenProfile, model_spec: str,
                 llm: LLMProvider, phase: str, meta: dict[str, Any]) -> None:
        self.deps = deps
        self.stored = stored
        self.id = stored.session_id
        self.profile = profile
        self.model_spec = model_spec
        self.llm = llm
        self.phase = phase
        self.loaded_at = deps.clock.now()
        self.last_used = deps.clock.monotonic()
        self.colony_spawned = bool(meta.get("colony_spawned"))
        self.spawned_colony_name: str | None = meta.get("spawned_colony_name")
        self.colony: Any = None
        self.queen = QueenRunner(self)
        self._queen_tools: Toolset | None = None
        self.mcp = McpRegistry.for_queen(deps.layout.queen_dir(profile.id))   # starts nothing yet
        self.budget = self._make_budget(meta)
        self._phase_lock = asyncio.Lock()

    def _make_budget(self, meta: dict[str, Any]) -> Budget:
        cfg = self.deps.settings.budgets
        budget = Budget("session", self.id, Limits(cfg.session_tokens, cfg.session_usd, cfg.session_seconds),
                        notify=self.publish_budget, persist=lambda usage: self.stored.merge_meta({"usage": usage}))
        if isinstance(meta.get("usage"), dict):
            budget.restore(meta["usage"])
        return budget

    async def publish_budget(self, type_: str, data: JsonObject) -> None:
        await self.publish(type_, data)

    @property
    def queen_id(self) -> str:
        return self.profile.id

    @property
    def workspace(self) -> Path:
        path = self.stored.dir / "workspace"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def touch(self) -> None:
        self.last_used = self.deps.clock.monotonic()

    def available_queen_tools(self) -> Toolset:
        if self._queen_tools is None:
            from apiary.tools.workspace import workspace_tools

            self._queen_tools = Toolset(workspace_tools(allow_commands=self.deps.settings.tools.allow_commands))
        return toolset_with(self._queen_tools, self.mcp.loaded_tools()) if self.mcp else self._queen_tools

    async def publish(self, type_: str, data: JsonObject) -> int:
        event = Event(type=type_, data=data, stream_id="queen", node_id="queen", execution_id=self.id)
        return (await self.deps.bus.publish(self.id, event)).id

    async def switch_phase(self, phase: str, *, source: str = "frontend", agent_path: str | None = None) -> bool:
        """Set the phase, persist it, publish, and (unless the queen did it) tell her. False if unchanged."""
        async with self._phase_lock:   # one switch at a time: persisted and published in call order
            if phase == self.phase:
                return False
            self.phase = phase
            await asyncio.to_thread(self.stored.merge_meta, {"phase": phase})   # an fsync: off the event loop
            data: JsonObject = {"phase": phase}
            if agent_path:
                data["agent_path"] = agent_path
            await self.publish("queen_phase_changed", data)
        if source != "tool":
            tools = ", ".join(self.phase_tool_names())
            from apiary.agent.context import InboxItem

            self.queen.deliver(InboxItem(f"[PHASE CHANGE] You are now in the {phase.upper()} phase. "
                                         f"Available tools: {tools}.", kind="event"))
        return True

    def phase_tool_names(self) -> list[str]:
        return [*PHASE_TOOLS.get(self.phase, ()), "ask_user"]

    # -- ColonyHost: how the loaded colony talks back -------------------------------------------

    def tell_queen(self, text: str) -> None:
        from apiary.agent.context import InboxItem

        if not self.queen.deliver(InboxItem(text, kind="event")):
            logger.info("queen of %s not running; dropped note: %s", self.id, text[:80])

    def inject_trigger(self, text: str) -> None:
        from apiary.agent.context import InboxItem

        if not self.queen.deliver(InboxItem(text, kind="trigger")):
            logger.info("queen of %s not running; trigger not delivered", self.id)

    async def workers_idle(self) -> None:
        await self.switch_phase("reviewing", source="auto")

    def lock(self, colony_name: str) -> None:
        now = utc_iso(self.deps.clock.now())
        self.stored.merge_meta({"colony_spawned": True, "spawned_colony_name": colony_name,
                                "spawned_colony_at": now})
        self.colony_spawned = True
        self.spawned_colony_name = colony_name

    def write_summary(self, messages: list[JsonObject], now: float) -> None:
        visible = [m for m in messages if (m["role"] == "user" and not m.get("is_system_nudge"))
                   or (m["role"] == "assistant" and not m.get("tool_calls"))]
        last = str(visible[-1]["content"])[:120] if visible else ""
        self.stored.write_summary({"message_count": len(visible), "last_message": last, "last_active_at": now})

    def to_json(self) -> JsonObject:
        colony = self.colony
        uptime = round(self.deps.clock.now() - self.loaded_at, 1)
        body: JsonObject = {
            "session_id": self.id,
            "colony_id": colony.name if colony else None,
            "colony_name": colony.display_name if colony else None,
            "has_worker": colony is not None,
            "agent_path": str(colony.path) if colony else "",
            "description": colony.description if colony else "",
            "goal": colony.goal_description if colony else "",
            "node_count": 1 if colony else 0,
            "loaded_at": self.loaded_at,
            "uptime_seconds": uptime,
            "intro_message": "",
            "queen_phase": self.phase,
            "queen_supports_images": bool(getattr(self.llm, "supports_images", False)),
            "queen_id": self.queen_id,
            "queen_name": self.profile.name,
            "colony_spawned": self.colony_spawned,
            "spawned_colony_name": self.spawned_colony_name,
            "model": self.model_spec,
        }
        return body
