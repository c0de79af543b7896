"""A worker process's side (PostgreSQL): claim executions, run them, keep their leases, answer stops.

``WorkerService`` claims execution rows with SKIP LOCKED (up to ``concurrency`` at once), runs each
in a worker-side ``ColonyRuntime`` built from the colony files the queen's side registered, renews
the lease every third of its length and gives up an execution whose lease another node took. A
``exec:<colony>/<id>`` notification means "look at the row and the mailbox": a stop or pause is
a ``cancel_reason`` on the row, an answer for a waiting worker is a mailbox message. A killed
worker's leases expire and any node claims the execution again: it resumes from its latest
checkpoint (kept in the database), and recorded model turns and tool results are not paid twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apiary.bus.bus import EventBus
from apiary.colonies.execution import SHUTDOWN, Execution
from apiary.colonies.remote import exec_target, publish_cancel_event, queen_target, request_from_json
from apiary.colonies.runtime import ColonyRuntime
from apiary.colonies.spec import ColonySpec
from apiary.core.clock import Clock
from apiary.core.config import Settings
from apiary.core.errors import ConfigurationError
from apiary.core.ids import IdFactory
from apiary.core.layout import Layout
from apiary.core.safety import is_safe_segment
from apiary.core.tasks import TaskOwner
from apiary.core.urls import redact_url
from apiary.llm.base import LLMProvider
from apiary.storage.base import ClaimedExecution, Coordination, Stores

logger = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RemoteHost:
    """The ``ColonyHost`` of a worker-side runtime: what it would tell the queen goes to her mailbox,
    in order, through one pump."""

    budget = None   # the session's budget is kept by the API server that runs the queen

    def __init__(self, session_id: str, coordination: Coordination, tasks: TaskOwner) -> None:
        self.id = session_id
        self._coordination = coordination
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pump = tasks.spawn(self._pump_forever(), name=f"outbox:{session_id}")

    def post(self, body: dict[str, Any]) -> None:
        self._outbox.put_nowait(body)

    def tell_queen(self, text: str) -> None:
        self.post({"kind": "tell", "text": text})

    def inject_trigger(self, text: str) -> None:
        self.post({"kind": "trigger", "text": text})

    async def workers_idle(self) -> None:
        return None   # the queen's side knows when its last execution ended

    async def flush(self) -> None:
        await self._outbox.join()

    async def _pump_forever(self) -> None:
        while True:
            body = await self._outbox.get()
            try:
                for attempt in range(30):   # a database restart: keep the message, retry with backoff
                    try:
                        await self._coordination.post(queen_target(self.id), body)
                        break
                    except Exception:
                        logger.warning("could not post to queen %s (attempt %d)", self.id, attempt + 1, exc_info=True)
                        await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))
            finally:
                self._outbox.task_done()


@dataclass
class Running:
    claimed: ClaimedExecution
    runtime: ColonyRuntime
    execution: Execution
    lost: bool = False
    heartbeat: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.claimed.colony, self.claimed.id)


class WorkerService:
    def __init__(self, *, settings: Settings, layout: Layout, stores: Stores, bus: EventBus, clock: Clock,
                 ids: IdFactory, make_llm: Callable[[str], LLMProvider], concurrency: int,
                 name: str | None = None) -> None:
        if stores.coordination is None:
            raise ValueError("worker processes need shared storage (a postgresql:// database)")
        self.coordination: Coordination = stores.coordination
        self.settings, self.layout, self.stores, self.bus = settings, layout, stores, bus
        self.clock, self.ids, self.make_llm = clock, ids, make_llm
        self._llms: dict[str, LLMProvider] = {}
        self.concurrency = max(1, concurrency)
        self.name = name or worker_name()
        self.lease_s = settings.colonies.worker_lease_s
        self.tasks = TaskOwner(f"worker:{self.name}")
        self.runtimes: dict[str, ColonyRuntime] = {}
        self.hosts: dict[str, RemoteHost] = {}
        self.running: dict[tuple[str, str], Running] = {}
        self.claimed_total = 0
        self._wake = asyncio.Event()

    # -- the claim loop ------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        self.stores.add_notification_callback(self._on_notification)
        logger.info("worker %s: claiming executions (up to %d at once)", self.name, self.concurrency)
        try:
            while not stopping.is_set():
                if self.concurrency > len(self.running):
                    claimed = await self._claim(self.concurrency - len(self.running))
                    for item in claimed:
                        await self._start(item)
                    if claimed:
                        continue
                self._wake.clear()
                waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
                await asyncio.wait(waits, timeout=self.settings.colonies.worker_poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
        finally:
            self.stores.remove_notification_callback(self._on_notification)
            await self.shutdown()

    async def _claim(self, limit: int) -> list[ClaimedExecution]:
        try:
            claimed = await self.coordination.claim_executions(self.name, limit, self.lease_s)
        except Exception:   # the database went away: the pool reconnects, the loop polls again
            logger.warning("worker %s: claim failed", self.name, exc_info=True)
            await asyncio.sleep(self.settings.colonies.worker_poll_s)
            return []
        self.claimed_total += len(claimed)
        return claimed

    def _on_notification(self, channel: str, payload: str | None) -> None:
        if channel != Coordination.CHANNEL:
            return
        if payload in (Coordination.WORK, None):
            self._wake.set()
        for running in list(self.running.values()):
            if payload is None or payload == exec_target(*running.key):
                self.tasks.spawn(self._control(running), name=f"control:{running.claimed.id}")

    # -- one execution -------------------------------------------------------------------------------

    async def _start(self, claimed: ClaimedExecution) -> None:
        try:
            runtime = await self._runtime(claimed.colony, claimed.session_id)
            request = request_from_json(claimed.request)
            if request.entry_point not in runtime.streams:
                raise ValueError(f"colony {claimed.colony} has no entry point {request.entry_point!r}")
        except Exception as exc:
            logger.exception("worker %s: cannot run execution %s of %s", self.name, claimed.id, claimed.colony)
            await self._give_up(claimed, f"worker could not load the execution: {exc}")
            return
        if claimed.cancel_reason:   # stopped while its previous holder died
            await self.coordination.finish(claimed.colony, claimed.id, self.name, "cancelled")
            await publish_cancel_event(runtime, claimed.id, claimed.cancel_reason, request.entry_point)
            self._host(claimed.session_id).post(_ended_message(claimed, request.entry_point, "cancelled",
                                                               {"status": "cancelled", "error": claimed.cancel_reason}))
            return
        if claimed.attempts > 1:   # its previous holder died or gave it back: go on from its last checkpoint
            checkpoint = await runtime.worker_session_store(request.execution_id).latest_checkpoint()
            if checkpoint is not None:
                request = replace(request, checkpoint=checkpoint, keep_timestamps=True,
                                  replay="resume" if request.replay == "live" else request.replay)
        runtime.worker_llm = self._llm(str(claimed.request.get("worker_model") or self.settings.worker_model
                                           or self.settings.model))
        stream = runtime.streams[request.entry_point]
        execution = await stream.start(request)
        assert isinstance(execution, Execution) and execution.task is not None
        running = Running(claimed, runtime, execution)
        self.running[running.key] = running
        running.heartbeat = self.tasks.spawn(self._keep_lease(running), name=f"lease:{claimed.id}")
        execution.task.add_done_callback(
            lambda _t: self.tasks.spawn(self._ended(running), name=f"ended:{claimed.id}"))
        logger.info("worker %s: running %s/%s (attempt %d)", self.name, claimed.colony, claimed.id, claimed.attempts)

    async def _give_up(self, claimed: ClaimedExecution, error: str) -> None:
        with contextlib.suppress(Exception):
            await self.coordination.finish(claimed.colony, claimed.id, self.name, "failed")
            entry_point = str(claimed.request.get("entry_point") or claimed.entry_point)
            self._host(claimed.session_id).post(_ended_message(claimed, entry_point, "failed",
                                                               {"status": "failed", "error": error}))

    async def _keep_lease(self, running: Running) -> None:
        period = self.lease_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                held = await self.coordination.renew(running.claimed.colony, running.claimed.id, self.name,
                                                     self.lease_s)
            except Exception:
                logger.warning("worker %s: lease renewal failed", self.name, exc_info=True)
                continue
            if not held:   # another node took it over (our lease had expired): stop without a trace
                running.lost = True
                running.execution.cancel_reason = SHUTDOWN
                await running.runtime.cancel(running.claimed.id, SHUTDOWN)
                return
            await self._control(running)   # in case a notification was missed

    async def _control(self, running: Running) -> None:
        colony, execution_id = running.key
        try:
            reason = await self.coordination.cancel_reason(colony, execution_id)
            messages = await self.coordination.take(exec_target(colony, execution_id))
        except Exception:
            logger.warning("worker %s: control read failed", self.name, exc_info=True)
            return
        for message in messages:
            if message.get("kind") == "inject":
                running.runtime.inject(str(message.get("node_id") or "worker"), str(message.get("content") or ""),
                                       request_id=message.get("request_id"))
        if reason and running.execution.cancel_reason is None and running.execution.task is not None \
                and not running.execution.task.done():
            await running.runtime.cancel(execution_id, reason)

    async def _ended(self, running: Running) -> None:
        if running.heartbeat is not None:
            running.heartbeat.cancel()
        try:
            await self._record_end(running)
        finally:   # only now: shutdown waits for ``running`` to empty before it closes the tasks
            self.running.pop(running.key, None)
            self._wake.set()

    async def _record_end(self, running: Running) -> None:
        execution, claimed = running.execution, running.claimed
        if running.lost:
            return
        try:
            if execution.cancel_reason == SHUTDOWN and execution.status not in ("completed", "failed"):
                await self.coordination.release(claimed.colony, claimed.id, self.name)
                return
            await self.coordination.finish(claimed.colony, claimed.id, self.name, execution.status)
        except Exception:   # the lease runs out and another node finishes it from the last checkpoint
            logger.exception("worker %s: could not record the end of %s", self.name, claimed.id)
            return
        result = dict(execution.result or {})
        if execution.loop is not None:
            result["tokens_used"] = execution.loop.ctx.state.input_tokens + execution.loop.ctx.state.output_tokens
        self._host(claimed.session_id).post(_ended_message(claimed, execution.request.entry_point, execution.status,
                                                           result, execution.claim_json(),
                                                           execution.claim.goal if execution.claim else ""))

    # -- colonies ------------------------------------------------------------------------------------

    def _llm(self, spec: str) -> LLMProvider:
        if spec not in self._llms:
            self._llms[spec] = self.make_llm(spec)
        return self._llms[spec]

    def _host(self, session_id: str) -> RemoteHost:
        host = self.hosts.get(session_id)
        if host is None:
            host = self.hosts[session_id] = RemoteHost(session_id, self.coordination, self.tasks)
        return host

    async def _runtime(self, colony: str, session_id: str) -> ColonyRuntime:
        runtime = self.runtimes.get(colony)
        if runtime is not None and runtime.session_id == session_id:
            return runtime
        if runtime is not None and not runtime.active():   # the colony moved to another session
            await runtime.aclose()
        if not is_safe_segment(colony):
            raise ValueError(f"unsafe colony name {colony!r}")
        files = await self.coordination.colony_files(colony)
        if files is None:
            raise ValueError(f"colony {colony!r} is not registered")
        folder = self.layout.colony_dir(colony)
        await asyncio.to_thread(_materialize, folder, files)
        spec = ColonySpec.load(folder)
        if spec is None:
            raise ValueError(f"colony {colony!r} has no worker spec")
        runtime = ColonyRuntime(host=self._host(session_id), spec=spec, settings=self.settings, layout=self.layout,
                                stores=self.stores, bus=self.bus, clock=self.clock, ids=self.ids,
                                worker_llm=self._llm(self.settings.worker_model or self.settings.model),
                                runs_here=True)
        await runtime.load_for_worker()
        self.runtimes[colony] = runtime
        return runtime

    async def shutdown(self) -> None:
        """Executions stop at a checkpoint and are given back, so another worker resumes them."""
        for running in self.running.values():
            running.execution.cancel_reason = SHUTDOWN
        for runtime in list(self.runtimes.values()):
            await runtime.aclose()
        self.runtimes.clear()
        # The releases run in tasks started by the executions' ends; give them time to land.
        for _ in range(100):
            if not self.running:
                break
            await asyncio.sleep(0.05)
        for host in self.hosts.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(host.flush(), 5.0)
        await self.tasks.aclose(5.0)


def _ended_message(claimed: ClaimedExecution, entry_point: str, status: str, result: dict[str, Any] | None,
                   claim: dict[str, Any] | None = None, goal: str = "") -> dict[str, Any]:
    return {"kind": "ended", "execution_id": claimed.id, "entry_point": entry_point, "status": status,
            "result": result, "claim": {**claim, "goal": goal} if claim else None}


def _materialize(folder: Path, files: dict[str, str]) -> None:
    """Write the colony's registered files where they differ (a worker host keeps its own copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if not is_safe_segment(name) or not name.endswith(".json"):
            continue
        path = folder / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


async def run_worker(settings: Settings, *, concurrency: int, stopping: asyncio.Event) -> None:
    """``apiary worker``: a process that only runs executions, until ``stopping`` is set."""
    from apiary.core.clock import SystemClock
    from apiary.core.ids import RandomIds
    from apiary.llm.registry import make_llm
    from apiary.storage import open_stores

    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    stores = await open_stores(settings.database_url, home=home,
                                           listen_url=settings.database_listen_url)
    try:
        if stores.coordination is None:
            raise ConfigurationError("apiary worker needs a shared database: --database postgresql://...")
        clock = SystemClock()
        bus = EventBus(stores.events, clock, queue_size=settings.server.sse_queue_size, remote=True)
        service = WorkerService(settings=settings, layout=Layout(home), stores=stores, bus=bus, clock=clock,
                                ids=RandomIds(), make_llm=lambda spec: make_llm(spec, settings),
                                concurrency=concurrency)
        logger.info("worker %s ready (database %s)", service.name, redact_url(settings.database_url))
        await service.run(stopping)
        await bus.close()
    finally:
        await stores.aclose()

