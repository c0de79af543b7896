"""ColonyRuntime: one loaded colony — its streams of executions, task queue, workers and goal.

The runtime never calls the queen: it tells its host (the session) through ``ColonyHost``, which
turns reports and escalations into queen inbox messages and phase changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from apiary.agent.budget import Budget, Limits
from apiary.agent.state import LoopConfig, RetryPolicy
from apiary.bus.bus import EventBus
from apiary.colonies.execution import PAUSED, SHUTDOWN, Execution, ExecutionRequest
from apiary.colonies.progress import goal_progress
from apiary.colonies.remote import QueenMailbox, RemoteExecution, RemoteStream
from apiary.colonies.spec import ColonySpec, EntryPoint
from apiary.colonies.stream import CancelOutcome, ExecutionStream
from apiary.colonies.timers import TimerSet
from apiary.colonies.worker_session import recover_stale_sessions
from apiary.core.clock import Clock
from apiary.core.config import Settings
from apiary.core.errors import ApiaryError
from apiary.core.events import Event
from apiary.core.ids import LEGACY_RUN_ID, IdFactory
from apiary.core.jsonfile import read_json, write_json
from apiary.core.layout import Layout
from apiary.core.safety import is_safe_segment
from apiary.core.tasks import TaskOwner
from apiary.llm.base import LLMProvider
from apiary.storage.base import Stores, TaskQueue, WorkerSessionStore
from apiary.storage.sqlite.progress_db import ensure_progress_db
from apiary.tools.base import Toolset
from apiary.tools.mcp_registry import McpRegistry, toolset_with

logger = logging.getLogger(__name__)


class ColonyHost(Protocol):
    id: str

    def tell_queen(self, text: str) -> None: ...

    def inject_trigger(self, text: str) -> None: ...

    async def workers_idle(self) -> None: ...


class ColonyRuntime:
    def __init__(self, *, host: ColonyHost, spec: ColonySpec, settings: Settings, layout: Layout, stores: Stores,
                 bus: EventBus, clock: Clock, ids: IdFactory, worker_llm: LLMProvider,
                 runs_here: bool | None = None) -> None:
        self.host, self.spec, self.settings, self.layout = host, spec, settings, layout
        self.stores, self.bus, self.clock, self.ids, self.worker_llm = stores, bus, clock, ids, worker_llm
        self.worker_model_spec = ""   # the model named for workers on other hosts ("" there: their default)
        self.tasks = TaskOwner(f"colony:{spec.name}")
        self.queue: TaskQueue = stores.task_queue(spec.name, spec.path, lease_s=settings.colonies.stale_claim_s)
        # With shared storage the queen's side queues executions for worker processes; a worker's
        # own runtime (``runs_here=True``) runs them.
        coordination = stores.coordination
        self.remote = coordination is not None and runs_here is not True
        self.streams: dict[str, ExecutionStream | RemoteStream] = {
            ep.id: RemoteStream(self, ep.id, coordination) if coordination is not None and self.remote
            else ExecutionStream(self, ep.id, self.tasks) for ep in spec.entry_points()}
        self.mailbox = QueenMailbox(self, coordination) if coordination is not None and self.remote else None
        self.timers_paused = False
        self.outputs: dict[str, Any] = {}
        self.finished: dict[str, Execution | RemoteExecution] = {}
        self._last_progress: float | None = None
        self._goal_achieved = False
        self.max_resurrections = 3
        self.loop_config = replace(LoopConfig.from_json(spec.loop_config), retry=RetryPolicy(
            max_retries=settings.llm.max_retries, base_s=settings.llm.retry_base_s, max_s=settings.llm.retry_max_s))
        self._tools: Toolset | None = None
        self.mcp = McpRegistry.for_colony(spec.path, spec.enabled_mcp_tools)   # allowlist from tools.json
        self.timers = TimerSet(self)
        cfg = settings.budgets
        self.budget = Budget("colony", spec.name, Limits(cfg.colony_tokens, cfg.colony_usd, cfg.colony_seconds),
                             notify=self._publish_budget, persist=self._save_usage)
        saved = read_json(spec.path / "usage.json", {})
        if isinstance(saved, dict):
            self.budget.restore(saved)

    # -- identity --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def session_id(self) -> str:
        return self.host.id

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def display_name(self) -> str:
        return self.spec.display_name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def goal_description(self) -> str:
        return self.spec.goal_description

    @property
    def workspace(self) -> Path:
        path = self.spec.path / "workspace"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def worker_session_dir(self, worker_session_id: str) -> Path:
        return self.layout.worker_session_dir(self.name, worker_session_id)

    def worker_tools(self) -> Toolset:
        if self._tools is None:
            from apiary.tools.workspace import workspace_tools

            builtin = Toolset(workspace_tools(allow_commands=self.settings.tools.allow_commands))
            self._tools = builtin.only(self.spec.tool_names)
        return toolset_with(self._tools, self.mcp.loaded_tools()) if self.mcp else self._tools

    # -- loading ---------------------------------------------------------------------------------

    async def load(self) -> None:
        if self.stores.coordination is None:
            await asyncio.to_thread(ensure_progress_db, self.spec.path,
                                    stale_claim_s=self.settings.colonies.stale_claim_s)
        if self.mcp:
            await self.mcp.load()
        self.outputs = await self._collect_outputs()
        await self.publish("worker_colony_loaded", {"colony_id": self.name, "colony_name": self.display_name,
                                                    "agent_path": str(self.path), "goal": self.goal_description,
                                                    "node_count": 1})
        self._last_progress = (await self.goal_progress())["progress"]
        self.tasks.spawn(self._reclaim_periodically(), name=f"reclaim:{self.name}")
        await self.timers.start()
        if self.mailbox is not None:
            await self.mailbox.join()
        else:
            await recover_stale_sessions(self)

    async def load_for_worker(self) -> None:
        """A worker process's runtime: tools and outputs, and the stale-claim sweep; no timers."""
        if self.mcp:
            await self.mcp.load()
        self.outputs = await self._collect_outputs()
        self._last_progress = (await self.goal_progress())["progress"]
        self.tasks.spawn(self._reclaim_periodically(), name=f"reclaim:{self.name}")

    async def _collect_outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for store in await self.worker_session_stores():
            try:
                state = await store.read_state() or {}
            except (ValueError, OSError):
                continue
            if state.get("status") == "completed":
                outputs.update((state.get("result") or {}).get("output") or {})
        return outputs

    def worker_session_store(self, worker_session_id: str) -> WorkerSessionStore:
        return self.stores.worker_session(self.name, self.worker_session_dir(worker_session_id), worker_session_id)

    async def worker_session_stores(self) -> list[WorkerSessionStore]:
        ids = await self.stores.worker_session_ids(self.name, self.layout.worker_sessions(self.name))
        return [self.worker_session_store(i) for i in ids if is_safe_segment(i)]

    async def _reclaim_periodically(self) -> None:
        period = max(1.0, min(self.settings.colonies.stale_claim_s / 3, 300.0))
        while True:
            await asyncio.sleep(period)
            try:
                if await self.queue.reclaim_stale(self.settings.colonies.stale_claim_s):
                    await self.queue_changed()
            except ApiaryError:
                logger.exception("stale reclaim failed in colony %s", self.name)

    async def aclose(self) -> None:
        """Shutdown or unload: executions stop at a checkpoint and stay resumable."""
        for stream in self.streams.values():
            for execution in stream.active.values():
                execution.cancel_reason = execution.cancel_reason or SHUTDOWN
        await self.timers.remove_all()
        if self.mailbox is not None:   # executions on workers go on; only the queen's side closes
            self.mailbox.close()
        await self.tasks.aclose(self.settings.colonies.cancel_grace_s)
        if self.mcp:
            await self.mcp.aclose()
        await self.queue.close()

    # -- events and the host ---------------------------------------------------------------------

    def budgets(self) -> list[Budget]:
        host_budget = getattr(self.host, "budget", None)
        return [b for b in (host_budget, self.budget) if isinstance(b, Budget)]

    async def _publish_budget(self, type_: str, data: dict[str, Any]) -> None:
        await self.publish(type_, data)

    def _save_usage(self, usage: dict[str, Any]) -> None:
        write_json(self.spec.path / "usage.json", usage, durable=False)

    async def publish(self, type_: str, data: dict[str, Any], *, stream_id: str | None = None) -> None:
        event = Event(type=type_, data=data, stream_id=stream_id, colony_id=self.name)
        await asyncio.shield(self.bus.publish(self.session_id, event))   # see Emitter.emit

    def tell_queen(self, text: str) -> None:
        self.host.tell_queen(text)

    async def queue_changed(self) -> None:
        progress = await self.goal_progress()
        if progress["progress"] != self._last_progress:
            self._last_progress = progress["progress"]
            await self.publish("goal_progress", progress)
            if progress["progress"] >= 1.0 and not self._goal_achieved:
                self._goal_achieved = True
                await self.publish("goal_achieved", progress)

    async def execution_ended(self, execution: Execution) -> None:
        execution.ended_at = self.clock.now()
        self.finished[execution.id] = execution
        if execution.status == "completed" and execution.loop is not None:
            self.outputs.update(execution.loop.ctx.state.outputs)
        result = execution.result or {}
        claim = execution.claim
        await self.publish("subagent_report", {
            "worker_id": execution.id, "status": execution.status, "summary": result.get("summary", ""),
            "error": result.get("error"), "task_id": claim.task_id if claim else None},
            stream_id=execution.request.entry_point)
        await self.queue_changed()
        if execution.status in ("completed", "failed"):
            summary = result.get("summary") or result.get("error") or ""
            self.host.tell_queen(f"[WORKER REPORT] Worker {execution.id} {execution.status}: {summary}")
        if not [eid for eid in self.active() if eid != execution.id]:
            await self.host.workers_idle()

    # -- starting --------------------------------------------------------------------------------

    def entry_points(self) -> list[EntryPoint]:
        return self.spec.entry_points()

    def entry_points_json(self) -> list[dict[str, Any]]:
        return self.timers.entry_points_json()

    def has_entry_point(self, entry_point: str | None) -> bool:
        return bool(self.streams) if entry_point is None else entry_point in self.streams

    async def check_credentials(self) -> None:
        """apiary's built-in tools need no credentials, so a colony never answers 424 today."""
        return None

    async def trigger(self, entry_point: str, input_data: dict[str, Any], session_state: dict[str, Any], *,
                      from_timer: bool = False) -> str:
        execution_id = str(session_state.get("resume_session_id") or self.ids.session_id(self.clock.now()))
        run_id = session_state.get("run_id")
        # ``resume_from_checkpoint`` is honoured (SPEC A 2.1): the execution continues from that
        # checkpoint of its worker session, as resume does; an unknown one means a fresh start.
        checkpoint = None
        if session_state.get("resume_from_checkpoint"):
            checkpoint = await self.find_checkpoint(execution_id, str(session_state["resume_from_checkpoint"]))
            if checkpoint is None:
                logger.warning("checkpoint %s of %s not found: starting fresh",
                               session_state["resume_from_checkpoint"], execution_id)
            elif not run_id:
                run_id = checkpoint.get("run_id") or LEGACY_RUN_ID
        request = ExecutionRequest(execution_id, str(run_id) if run_id else self.ids.run_id(), entry_point,
                                   dict(input_data), checkpoint=checkpoint,
                                   replay="resume" if checkpoint is not None else "live",
                                   keep_timestamps=checkpoint is not None)
        if not from_timer:
            self.timers_paused = False
        await self.streams[entry_point].start(request)
        return execution_id

    def _first_entry(self) -> str:
        return next(iter(self.streams))

    async def resume(self, worker_session_id: str, checkpoint: dict[str, Any], state: dict[str, Any] | None, *,
                     entry_point: str | None = None) -> str:
        input_data = dict((state or {}).get("input_data") or {})
        return await self._from_checkpoint(worker_session_id, checkpoint, input_data, "resume",
                                           entry_point or self._first_entry())

    async def replay(self, worker_session_id: str, checkpoint: dict[str, Any], *, mode: str) -> str:
        replay = "recorded" if mode == "recorded" else "live"
        return await self._from_checkpoint(worker_session_id, checkpoint, {}, replay, self._first_entry())

    async def _from_checkpoint(self, worker_session_id: str, checkpoint: dict[str, Any], input_data: dict[str, Any],
                               replay: Any, entry_point: str) -> str:
        run_id = str(checkpoint.get("run_id") or LEGACY_RUN_ID)
        request = ExecutionRequest(worker_session_id, run_id, entry_point, input_data, checkpoint=checkpoint,
                                   replay=replay, keep_timestamps=True)
        self.timers_paused = False
        await self.streams[entry_point].start(request)
        return worker_session_id

    async def prepare_resume(self, execution: Execution, checkpoint: dict[str, Any]) -> dict[tuple[int, str], Any]:
        """Put the conversation back to the checkpoint; return the run's recordings (B 2.6, 3.9)."""
        owner = execution.owner
        loop = checkpoint.get("loop")
        if isinstance(loop, dict) and isinstance(loop.get("next_seq"), int):
            await self.stores.conversations.truncate_from(owner, loop["next_seq"])
            await self.stores.conversations.put_cursor(owner, loop)
        return await self.stores.recordings.get_run(owner, execution.request.run_id)

    # -- control ---------------------------------------------------------------------------------

    def active(self) -> dict[str, Execution | RemoteExecution]:
        return {eid: ex for stream in self.streams.values() for eid, ex in stream.active.items()}

    async def cancel(self, execution_id: str, reason: str) -> CancelOutcome:
        for stream in self.streams.values():
            if execution_id in stream.active:
                return await stream.cancel(execution_id, reason)
        return "not_found"

    async def pause(self) -> tuple[list[str], list[str]]:
        self.timers_paused = True
        targets = [(stream, eid) for stream in self.streams.values() for eid in stream.active_ids()]
        outcomes = await asyncio.gather(*(stream.cancel(eid, PAUSED) for stream, eid in targets))
        cancelled = [eid for (_, eid), out in zip(targets, outcomes, strict=True) if out == "cancelled"]
        cancelling = [eid for (_, eid), out in zip(targets, outcomes, strict=True) if out == "cancelling"]
        return cancelled, cancelling

    def inject(self, node_id: str, content: str, *, colony_id: str | None = None,
               request_id: str | None = None) -> bool:
        """Deliver to a running worker node: the one waiting on ``request_id``, else the longest waiter."""
        from apiary.agent.context import InboxItem

        if self.mailbox is not None:
            return self.mailbox.inject(node_id, content, request_id)
        loops = [ex.loop for ex in self.active().values() if ex.loop is not None and ex.loop.ctx.node_id == node_id]
        if request_id is not None:
            loops = [loop for loop in loops if request_id in loop.ctx.waiting_requests]
        if not loops:
            return False
        waiting = [loop for loop in loops if loop.ctx.waiting_requests]
        target = min(waiting, key=lambda lp: min(lp.ctx.waiting_requests.values())) if waiting else loops[0]
        target.inject(InboxItem(content, "answer", request_id=request_id))
        return True

    async def goal_progress(self) -> dict[str, Any]:
        return goal_progress(await self.queue.counts(), self.spec.success_criteria(), self.outputs)

    # -- worker sessions and checkpoints -----------------------------------------------------------

    async def worker_session(self, worker_session_id: str) -> WorkerSessionStore | None:
        if not is_safe_segment(worker_session_id):
            return None
        store = self.worker_session_store(worker_session_id)
        return store if await store.exists() else None

    async def has_worker_session(self, worker_session_id: str) -> bool:
        return await self.worker_session(worker_session_id) is not None

    async def read_worker_state(self, worker_session_id: str) -> dict[str, Any] | None:
        store = await self.worker_session(worker_session_id)
        try:
            return await store.read_state() if store else None
        except (ValueError, OSError) as exc:
            raise ApiaryError(f"Failed to read session: {exc}") from exc

    async def find_checkpoint(self, worker_session_id: str, checkpoint_id: str | None) -> dict[str, Any] | None:
        if not checkpoint_id or not is_safe_segment(worker_session_id) or not is_safe_segment(checkpoint_id):
            return None
        return await self.worker_session_store(worker_session_id).get_checkpoint(checkpoint_id)

    def stats(self) -> dict[str, Any]:
        active = self.active()
        return {"colony_id": self.name, "active_executions": len(active), "finished_executions": len(self.finished),
                "timers_paused": self.timers_paused, "streams": {s.id: s.active_ids() for s in self.streams.values()}}
