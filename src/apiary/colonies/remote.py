"""Executions run by worker processes (PostgreSQL): the queen's side.

A ``RemoteStream`` stands where an ``ExecutionStream`` stands in a local colony: ``start`` queues an
execution row for any worker to claim, ``cancel`` marks it and wakes its holder, ``active`` mirrors
the executions that have not ended. Workers answer through the mailbox ``queen:<session id>``:
``tell`` (a report or escalation for the queen), ``trigger`` and ``ended`` (the final status, so the
stream can forget the execution). Events never travel here: workers append them to the shared event
log and every API server's bus fans them out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apiary.colonies.execution import Claim, ExecutionRequest
from apiary.colonies.spec import spec_files
from apiary.colonies.stream import RESTARTED, CancelOutcome
from apiary.core.clock import utc_iso
from apiary.core.errors import AlreadyRunning, ApiaryError
from apiary.core.events import Event
from apiary.storage.base import Coordination

if TYPE_CHECKING:
    from apiary.colonies.runtime import ColonyRuntime

logger = logging.getLogger(__name__)


queen_target = Coordination.queen_target
exec_target = Coordination.exec_target


def request_json(request: ExecutionRequest) -> dict[str, Any]:
    return {"execution_id": request.execution_id, "run_id": request.run_id, "entry_point": request.entry_point,
            "input_data": request.input_data, "checkpoint": request.checkpoint, "replay": request.replay,
            "keep_timestamps": request.keep_timestamps}


def request_from_json(raw: dict[str, Any]) -> ExecutionRequest:
    replay = raw.get("replay") if raw.get("replay") in ("live", "resume", "recorded") else "live"
    return ExecutionRequest(str(raw["execution_id"]), str(raw["run_id"]), str(raw["entry_point"]),
                            dict(raw.get("input_data") or {}), checkpoint=raw.get("checkpoint"), replay=replay,
                            keep_timestamps=bool(raw.get("keep_timestamps")))


@dataclass
class RemoteExecution:
    """What the queen's side knows of an execution a worker runs (the fields the views read)."""

    request: ExecutionRequest
    status: str = "pending"
    started_at: float = 0.0
    ended_at: float = 0.0
    cancel_reason: str | None = None
    claim: Claim | None = None
    result: dict[str, Any] | None = None
    loop: None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def id(self) -> str:
        return self.request.execution_id

    @property
    def input_data(self) -> dict[str, Any]:
        return self.request.input_data


class RemoteStream:
    def __init__(self, runtime: ColonyRuntime, entry_point: str, coordination: Coordination) -> None:
        self.runtime = runtime
        self.id = entry_point
        self.coordination = coordination
        self.active: dict[str, RemoteExecution] = {}
        self._lock = asyncio.Lock()

    def active_ids(self) -> list[str]:
        return list(self.active)

    async def start(self, request: ExecutionRequest) -> RemoteExecution:
        for execution_id in self.active_ids():
            await self.cancel(execution_id, RESTARTED)
        rt = self.runtime
        async with self._lock:
            queued = await self._submit(request)
            if not queued:
                # The database still has one of this stream's executions active (one that is ending right
                # now, or one this side did not know of): restart it, as a local stream does, and wait.
                for row in await self.coordination.active_executions(rt.name):
                    if row.get("entry_point") != self.id:
                        continue
                    if str(row["id"]) not in self.active:
                        self.adopt(row)
                    await self.cancel(str(row["id"]), RESTARTED)
                deadline = rt.clock.monotonic() + rt.settings.colonies.cancel_grace_s
                while not queued and rt.clock.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    queued = await self._submit(request)
            if not queued:
                ids = self.active_ids() or [request.execution_id]
                raise AlreadyRunning(
                    f"Stream '{self.id}' already has an active execution: {ids}. Concurrent executions on the "
                    "same stream are not allowed.", stream_id=self.id, active_execution_ids=ids)
            execution = RemoteExecution(request, started_at=rt.clock.now())
            self.active[execution.id] = execution
            return execution

    async def _submit(self, request: ExecutionRequest) -> bool:
        rt = self.runtime
        return await self.coordination.submit(rt.name, request.execution_id, rt.session_id, self.id,
                                              {**request_json(request), "worker_model": rt.worker_model_spec})

    def adopt(self, row: dict[str, Any]) -> None:
        """An execution still active in the database when the colony loads (e.g. after a restart)."""
        try:
            request = request_from_json(row["request"])
        except (KeyError, TypeError, ValueError):
            return
        self.active[request.execution_id] = RemoteExecution(
            request, status="running" if row.get("status") == "running" else "pending",
            started_at=float(row.get("created_at") or 0.0), cancel_reason=row.get("cancel_reason"))

    async def cancel(self, execution_id: str, reason: str) -> CancelOutcome:
        execution = self.active.get(execution_id)
        if execution is None:
            return "not_found"
        rt = self.runtime
        state = await self.coordination.request_cancel(rt.name, execution_id, reason)
        if state == "not_found":   # it ended already; its report is on the way
            return "not_found"
        if state == "ended":   # no worker had claimed it: nothing ran, it ends here
            await publish_cancel_event(rt, execution_id, reason, self.id)
            await self.ended({"execution_id": execution_id, "status": "cancelled",
                              "result": {"status": "cancelled", "summary": "", "error": reason}})
            return "cancelled"
        execution.cancel_reason = execution.cancel_reason or reason
        execution.status = "cancelling"
        try:
            await asyncio.wait_for(execution.done.wait(), rt.settings.colonies.cancel_grace_s)
        except TimeoutError:
            return "cancelling"
        return "cancelled"

    async def ended(self, message: dict[str, Any]) -> RemoteExecution | None:
        execution = self.active.pop(str(message.get("execution_id")), None)
        if execution is None:
            return None
        execution.status = str(message.get("status") or "completed")
        execution.result = message.get("result") if isinstance(message.get("result"), dict) else None
        claim = message.get("claim")
        if isinstance(claim, dict) and claim.get("task_id"):
            execution.claim = Claim(str(claim["task_id"]), str(claim.get("worker_id") or execution.id),
                                    goal=str(claim.get("goal") or ""))
        execution.ended_at = self.runtime.clock.now()
        execution.done.set()
        return execution


class QueenMailbox:
    """Takes the messages workers leave for this session and hands them to the runtime."""

    def __init__(self, runtime: ColonyRuntime, coordination: Coordination) -> None:
        self.runtime = runtime
        self.coordination = coordination
        self.target = queen_target(runtime.session_id)
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def join(self) -> None:
        """Publish the colony's spec for worker hosts, adopt executions still active, read the mailbox.
        Stale worker sessions need no recovery here: an expired lease moves them on."""
        rt = self.runtime
        await self.coordination.register_colony(rt.name, rt.session_id, await asyncio.to_thread(spec_files, rt.path))
        for row in await self.coordination.active_executions(rt.name):
            stream = rt.streams.get(str(row.get("entry_point")))
            if isinstance(stream, RemoteStream) and row.get("session_id") == rt.session_id:
                stream.adopt(row)
        self.start()

    def inject(self, node_id: str, content: str, request_id: str | None) -> bool:
        """An answer for a waiting worker: the worker holding the execution delivers it, as locally."""
        rt = self.runtime
        active = list(rt.active())
        if not active or node_id != "worker":
            return False
        body = {"kind": "inject", "node_id": node_id, "content": content, "request_id": request_id}
        for execution_id in active:
            rt.tasks.spawn(self.coordination.post(exec_target(rt.name, execution_id), body),
                           name=f"inject:{execution_id}")
        return True

    def start(self) -> None:
        self.runtime.stores.add_notification_callback(self._on_notification)
        self._wanted.set()   # whatever was left while no one had this session loaded
        self._task = self.runtime.tasks.spawn(self._drain_forever(), name=f"mailbox:{self.target}")

    def close(self) -> None:
        self.runtime.stores.remove_notification_callback(self._on_notification)

    def _on_notification(self, channel: str, payload: str | None) -> None:
        if channel == Coordination.CHANNEL and payload in (self.target, None):
            self._wanted.set()

    async def _drain_forever(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                for message in await self.coordination.take(self.target):
                    await self._handle(message)
            except ApiaryError:
                logger.exception("mailbox %s: could not take messages", self.target)
            except Exception:   # a database hiccup must not end the drain: the next wake-up retries
                logger.exception("mailbox %s failed", self.target)
                await asyncio.sleep(1.0)
                self._wanted.set()

    async def _handle(self, message: dict[str, Any]) -> None:
        rt = self.runtime
        kind = message.get("kind")
        if kind == "tell":
            rt.host.tell_queen(str(message.get("text") or ""))
        elif kind == "trigger":
            rt.host.inject_trigger(str(message.get("text") or ""))
        elif kind == "ended":
            stream = rt.streams.get(str(message.get("entry_point") or ""))
            execution = await stream.ended(message) if isinstance(stream, RemoteStream) else None
            if execution is not None:
                rt.finished[execution.id] = execution
                await rt.queue_changed()
                if not rt.active():
                    await rt.host.workers_idle()


async def publish_cancel_event(runtime: ColonyRuntime, execution_id: str, reason: str, stream_id: str) -> None:
    event = Event(type="execution_failed", data={"error": reason, "cancelled": True}, stream_id=stream_id,
                  colony_id=runtime.name, execution_id=execution_id, timestamp=utc_iso(runtime.clock.now()))
    await runtime.bus.publish(runtime.session_id, event)
