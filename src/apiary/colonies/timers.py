"""Timers (SPEC B 12): timer entry points that trigger executions, and the queen's timer triggers
from ``triggers.json`` that inject a trigger message into the queen. ``timers_paused`` holds both,
so after a pause nothing restarts work on its own."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter

from apiary.core.errors import InvalidRequest
from apiary.core.jsonfile import write_json

if TYPE_CHECKING:
    from apiary.colonies.runtime import ColonyRuntime

logger = logging.getLogger(__name__)
TIMER_INPUT = {"event": {"source": "timer", "reason": "scheduled"}}


def check_timer_config(config: Any) -> dict[str, Any]:
    """A timer needs a valid ``cron`` or an ``interval_minutes`` above 0."""
    if not isinstance(config, dict):
        raise InvalidRequest("trigger_config must be an object")
    cron = config.get("cron")
    if isinstance(cron, str) and cron.strip():
        if not croniter.is_valid(cron):
            raise InvalidRequest(f"Invalid cron expression '{cron}'")
        return config
    interval = config.get("interval_minutes")
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
        return config
    raise InvalidRequest("A timer needs a valid 'cron' or an 'interval_minutes' above 0")


def next_fire(config: dict[str, Any], now: float) -> float:
    cron = config.get("cron")
    if isinstance(cron, str) and cron.strip():
        return float(croniter(cron, datetime.fromtimestamp(now, UTC)).get_next(float))
    return now + float(config["interval_minutes"]) * 60.0


@dataclass
class QueenTrigger:
    id: str
    name: str
    trigger_type: str
    trigger_config: dict[str, Any]
    task: str
    active: bool = True
    fire_count: int = 0
    last_fired_at: int | None = None   # epoch ms
    next_fire_at: float | None = None  # epoch s
    task_handle: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "trigger_type": self.trigger_type,
                "trigger_config": self.trigger_config, "task": self.task}

    def event_data(self, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {"trigger_id": self.id, "trigger_type": self.trigger_type,
                                "trigger_config": self.trigger_config, "name": self.name, "task": self.task,
                                "fire_count": self.fire_count, "last_fired_at": self.last_fired_at}
        if self.next_fire_at is not None:
            data["next_fire_in"] = round(max(0.0, self.next_fire_at - now), 1)
            data["next_fire_at"] = int(self.next_fire_at * 1000)
        return data


class TimerSet:
    def __init__(self, runtime: ColonyRuntime) -> None:
        self.rt = runtime
        self.triggers: dict[str, QueenTrigger] = {}
        self.entry_next: dict[str, float] = {}

    async def start(self) -> None:
        for raw in self.rt.spec.triggers:
            if not isinstance(raw.get("id"), str):
                continue
            trig = QueenTrigger(raw["id"], str(raw.get("name") or raw["id"]), str(raw.get("trigger_type", "timer")),
                                dict(raw.get("trigger_config") or {}), str(raw.get("task") or ""),
                                active=raw.get("active", True) is not False)
            self.triggers[trig.id] = trig
            await self.rt.publish("trigger_available", trig.event_data(self.rt.clock.now()), stream_id=trig.id)
            if trig.active:
                await self.activate(trig.id)
        for ep in self.rt.entry_points():
            if ep.trigger_type == "timer":
                try:
                    check_timer_config(ep.trigger_config)
                except InvalidRequest:
                    logger.warning("entry point %s has no valid timer config", ep.id)
                    continue
                self.rt.tasks.spawn(self._entry_loop(ep.id, ep.trigger_config), name=f"timer:{ep.id}")

    # -- entry-point timers ----------------------------------------------------------------------

    async def _entry_loop(self, entry_point: str, config: dict[str, Any]) -> None:
        clock = self.rt.clock
        due = clock.now() if config.get("run_immediately") else next_fire(config, clock.now())
        while True:
            self.entry_next[entry_point] = due
            await asyncio.sleep(max(0.0, due - clock.now()))
            due = next_fire(config, clock.now())
            if self.rt.timers_paused or self.rt.streams[entry_point].active:
                continue
            try:
                await self.rt.trigger(entry_point, dict(TIMER_INPUT), {}, from_timer=True)
            except Exception:
                logger.exception("timer of entry point %s could not start an execution", entry_point)

    # -- queen triggers --------------------------------------------------------------------------

    def get(self, trigger_id: str) -> QueenTrigger | None:
        return self.triggers.get(trigger_id)

    async def activate(self, trigger_id: str) -> bool:
        trig = self.triggers[trigger_id]
        if trig.task_handle is not None and not trig.task_handle.done():
            return False
        trig.active = True
        if trig.trigger_type == "timer":
            try:
                check_timer_config(trig.trigger_config)
            except InvalidRequest:
                logger.warning("trigger %s has no valid timer config", trig.id)
            else:
                trig.task_handle = self.rt.tasks.spawn(self._trigger_loop(trig), name=f"trigger:{trig.id}")
        await self.rt.publish("trigger_activated", trig.event_data(self.rt.clock.now()), stream_id=trig.id)
        return True

    async def deactivate(self, trigger_id: str) -> bool:
        trig = self.triggers[trigger_id]
        was_active = trig.active
        trig.active = False
        trig.next_fire_at = None
        if trig.task_handle is not None:
            trig.task_handle.cancel()
            trig.task_handle = None
        if was_active:
            await self.rt.publish("trigger_deactivated", trig.event_data(self.rt.clock.now()), stream_id=trig.id)
        return was_active

    async def _trigger_loop(self, trig: QueenTrigger) -> None:
        clock = self.rt.clock
        while True:
            trig.next_fire_at = next_fire(trig.trigger_config, clock.now())
            await asyncio.sleep(max(0.0, trig.next_fire_at - clock.now()))
            if not self.rt.timers_paused:
                await self.fire(trig)

    async def fire(self, trig: QueenTrigger, *, forced: bool = False) -> None:
        now = self.rt.clock.now()
        trig.fire_count += 1
        trig.last_fired_at = int(now * 1000)
        payload: dict[str, Any] = {"task": trig.task, "trigger_config": trig.trigger_config}
        if forced:
            payload["forced"] = True
        text = f"[TRIGGER: {trig.trigger_type}/{trig.id}]\nTask: {trig.task}\n{json.dumps(payload)}"
        self.rt.host.inject_trigger(text)
        await self.rt.publish("trigger_fired", trig.event_data(now), stream_id=trig.id)

    async def update(self, trigger_id: str, *, task: str | None, config: dict[str, Any] | None) -> QueenTrigger:
        trig = self.triggers[trigger_id]
        if config is not None:
            if trig.trigger_type == "timer":
                check_timer_config(config)
            trig.trigger_config = config
        if task is not None:
            trig.task = task
        await asyncio.to_thread(self._save)
        if trig.active:
            await self.deactivate(trigger_id)
            await self.activate(trigger_id)
        await self.rt.publish("trigger_updated", trig.event_data(self.rt.clock.now()), stream_id=trig.id)
        return trig

    def _save(self) -> None:
        write_json(self.rt.spec.path / "triggers.json", [t.to_json() for t in self.triggers.values()])

    async def remove_all(self) -> None:
        for trig in self.triggers.values():
            await self.rt.publish("trigger_removed", trig.event_data(self.rt.clock.now()), stream_id=trig.id)

    def entry_points_json(self) -> list[dict[str, Any]]:
        now = self.rt.clock.now()
        items = []
        for ep in self.rt.entry_points():
            item = ep.to_json()
            if ep.id in self.entry_next:
                item["next_fire_in"] = round(max(0.0, self.entry_next[ep.id] - now), 1)
            items.append(item)
        for trig in self.triggers.values():
            data = trig.event_data(now)
            items.append({"id": trig.id, "name": trig.name, "entry_node": "queen", "trigger_type": trig.trigger_type,
                          "trigger_config": trig.trigger_config, "task": trig.task,
                          "next_fire_in": data.get("next_fire_in"), "next_fire_at": data.get("next_fire_at"),
                          "fire_count": trig.fire_count, "last_fired_at": trig.last_fired_at})
        return items
