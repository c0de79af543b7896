"""One worker execution: claim a task, run the worker loop, checkpoint every step, finish the task.

Lifecycle (SPEC B 2.4-2.6): ``execution_started`` -> loop -> exactly one final event
(``execution_completed``, ``execution_failed`` or ``execution_paused``), after which the emitter is
muted so nothing of the execution can follow. Cancelling the task (stop, pause, restart) writes an
``interrupted`` checkpoint shielded from the cancel; a shutdown leaves the session ``active`` so
that it is resumed when the colony loads again, as after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from apiary.agent.context import ReplayMode, RunContext
from apiary.agent.emitter import Emitter
from apiary.agent.loop import AgentLoop, LoopFailed
from apiary.agent.model_call import NoRecording
from apiary.colonies.checkpointing import WorkerHooks, build_checkpoint
from apiary.colonies.worker_session import new_state
from apiary.core.clock import utc_iso
from apiary.core.errors import ApiaryError, ProviderError, UsageLimitExceeded
from apiary.storage.base import WorkerSessionStore
from apiary.tools.base import ToolContext

if TYPE_CHECKING:
    from apiary.colonies.runtime import ColonyRuntime

logger = logging.getLogger(__name__)

FATAL_MARKERS = ("credential", "authentication", "unauthorized", "forbidden", "api key", "import error",
                 "module not found", "no module named", "permission denied", "invalid api", "configuration error",
                 "node stalled", "ghost empty stream", "max iterations")
SHUTDOWN = "shutdown"
PAUSED = "Execution paused by user"


def is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, LoopFailed | NoRecording | UsageLimitExceeded) or (
            isinstance(exc, ProviderError) and not exc.retryable):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in FATAL_MARKERS)


@dataclass
class ExecutionRequest:
    execution_id: str
    run_id: str
    entry_point: str
    input_data: dict[str, Any]
    checkpoint: dict[str, Any] | None = None
    replay: ReplayMode = "live"
    keep_timestamps: bool = False


@dataclass
class Claim:
    task_id: str
    worker_id: str
    claim_token: str = ""
    goal: str = ""


@dataclass
class Execution:
    runtime: ColonyRuntime
    request: ExecutionRequest
    status: Literal["pending", "running", "cancelling", "completed", "failed", "paused", "cancelled"] = "pending"
    task: asyncio.Task[None] | None = None
    loop: AgentLoop | None = None
    cancel_reason: str | None = None
    claim: Claim | None = None
    started_at: float = 0.0
    ended_at: float = 0.0
    result: dict[str, Any] | None = None
    emitter: Emitter | None = None
    _store: WorkerSessionStore | None = field(default=None, repr=False)
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    _io: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.request.execution_id

    @property
    def input_data(self) -> dict[str, Any]:
        return self.request.input_data

    @property
    def store(self) -> WorkerSessionStore:
        if self._store is None:
            self._store = self.runtime.worker_session_store(self.id)
        return self._store

    @property
    def owner(self) -> str:
        return f"worker:{self.runtime.name}:{self.id}"

    def claim_json(self) -> dict[str, Any] | None:
        c = self.claim
        return None if c is None else {"task_id": c.task_id, "claim_token": c.claim_token, "worker_id": c.worker_id}

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        rt = self.runtime
        self.started_at = rt.clock.now()
        self.status = "running"
        req = self.request
        self.emitter = Emitter(rt.bus, rt.session_id, stream_id=req.entry_point, node_id="worker",
                               execution_id=self.id, colony_id=rt.name, run_id=req.run_id)
        heartbeat: asyncio.Task[None] | None = None
        # Everything after registration is inside the try, so a cancel that lands while the
        # execution is still starting (a stop or restart right after the trigger) also ends it with
        # its final event and a written state.json.
        try:
            await self._event("execution_started", {"input": req.input_data})
            if req.checkpoint is not None:
                await self._event("execution_resumed", {"resumed_from": self.id,
                                                        "checkpoint_id": req.checkpoint.get("checkpoint_id"),
                                                        "run_id": req.run_id})
            await self._file_io(self._begin_files)
            heartbeat = asyncio.create_task(self._heartbeat())
            outputs = await self._attempts()
        except asyncio.CancelledError:
            await asyncio.shield(self._on_cancelled())
            raise
        except Exception as exc:
            await self._finish_failed(str(exc) or type(exc).__name__)
        else:
            await self._finish_completed(outputs)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    async def _file_io(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run a state/checkpoint write shielded from a cancel. The write is remembered and the
        cancel path waits for it: an older state never lands last."""
        self._io = asyncio.ensure_future(write())
        await asyncio.shield(self._io)

    async def _event(self, type_: str, data: dict[str, Any], *, final: bool = False) -> None:
        assert self.emitter is not None
        event = self.emitter.event(type_, data)
        if type_.startswith("execution_"):
            event = replace(event, node_id=None)
        if not self.emitter.muted:
            # Shielded like Emitter.emit: a cancel must not interrupt an append to the event log.
            await asyncio.shield(self.runtime.bus.publish(self.runtime.session_id, event))
        if final:
            self.emitter.muted = True

    def _new_state(self) -> dict[str, Any]:
        req, rt = self.request, self.runtime
        return new_state(self.id, entry_point=req.entry_point, colony=rt.name, input_data=req.input_data,
                         run_id=req.run_id, now=rt.clock.now())

    async def _begin_files(self) -> None:
        store, req, rt = self.store, self.request, self.runtime
        previous = None
        with contextlib.suppress(ValueError, OSError):
            previous = await store.read_state()
        state = self._new_state()
        if previous and req.keep_timestamps:
            state["timestamps"]["started_at"] = previous.get("timestamps", {}).get("started_at")
        state["progress"]["resume_from"] = (req.checkpoint or {}).get("checkpoint_id")
        self._state = state
        await store.write_state(state)
        await store.append_run(req.run_id, "run_started", rt.clock.now())

    async def _attempts(self) -> dict[str, Any]:
        rt = self.runtime
        checkpoint = self.request.checkpoint
        replay = self.request.replay
        attempt = 0
        while True:
            try:
                return await self._run_loop(checkpoint, replay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_fatal(exc) or attempt >= rt.max_resurrections:
                    raise
                attempt += 1
                checkpoint = await self.store.latest_checkpoint()
                replay = "resume" if replay == "live" else replay
                await self._event("execution_resurrected", {
                    "attempt": attempt, "max_resurrections": rt.max_resurrections, "error": str(exc)[:500],
                    "resume_from": (checkpoint or {}).get("checkpoint_id")})
                await asyncio.sleep(rt.settings.colonies.resurrect_delay_s)

    async def _run_loop(self, checkpoint: dict[str, Any] | None, replay: ReplayMode) -> dict[str, Any]:
        rt = self.runtime
        if checkpoint is not None and _run_ended_at(checkpoint):
            # The run had already ended there (node complete, or the accepted last iteration): there
            # is nothing left to run, so it completes at once with the outputs it had, and finishes the
            # task it held (the process may have died between the last turn and the queue's update).
            if self.claim is None and self.request.replay != "recorded":
                await self._held_claim(checkpoint)
            return dict(checkpoint.get("accumulated_outputs") or {})
        recorded: dict[tuple[int, str], Any] = {}
        if checkpoint is not None:
            recorded = await rt.prepare_resume(self, checkpoint)
        await self._ensure_claim(checkpoint)
        assert self.emitter is not None
        ctx = RunContext(
            role="worker", owner=self.owner, run_id=self.request.run_id, llm=rt.worker_llm, config=rt.loop_config,
            emitter=self.emitter, conversations=rt.stores.conversations, recordings=rt.stores.recordings,
            clock=rt.clock, ids=rt.ids, hooks=WorkerHooks(self, rt.worker_tools()),
            tool_context=ToolContext(workspace=rt.workspace, session_id=self.id, node_id="worker",
                                     spillover_dir=rt.worker_session_dir(self.id) / "data"),
            replay=replay if checkpoint is not None else "live", recorded=recorded,
            budgets=rt.budgets(), prices=dict(rt.settings.budgets.prices))
        self.loop = AgentLoop(ctx, initial_messages=[self._first_message(ctx)])
        outcome = await self.loop.run()
        return outcome.outputs

    def _first_message(self, ctx: RunContext) -> str:
        lines = [f"{k}: {v}" for k, v in self.input_data.items() if v is not None]
        goal = self.claim.goal if self.claim and self.claim.goal else self.runtime.spec.goal_description
        if goal:
            lines.append(f"Goal: {goal}")
        return f"{ctx.stamp()} " + ("\n".join(lines) or "Start the task.")

    async def _ensure_claim(self, checkpoint: dict[str, Any] | None) -> None:
        if self.claim is not None or self.request.replay == "recorded":
            # A recorded replay only re-plays what is stored: it must not claim, finish or fail a
            # task of the queue (its "no recorded response" end would fail the real task).
            return
        queue = self.runtime.queue
        held = (checkpoint or {}).get("task") or {}
        if await self._held_claim(checkpoint):
            return
        worker_id = self.id   # the same id /workers shows, so tasks and workers can be matched
        wanted = self.input_data.get("task_id") or held.get("task_id")
        claimed = await queue.claim(worker_id, str(wanted)) if wanted else None
        if claimed is None and not wanted:
            claimed = await queue.claim(worker_id)
        if claimed is not None:
            self.claim = Claim(claimed.id, worker_id, claimed.claim_token, claimed.goal)
            await queue.start(claimed.id, worker_id)
            await self.runtime.queue_changed()

    async def _held_claim(self, checkpoint: dict[str, Any] | None) -> bool:
        """Take back the task named by the checkpoint, if this execution still holds it."""
        held = (checkpoint or {}).get("task") or {}
        if not (held.get("task_id") and held.get("worker_id")):
            return False
        queue = self.runtime.queue
        task_id, worker_id = str(held["task_id"]), str(held["worker_id"])
        if not await queue.heartbeat(task_id, worker_id):
            return False
        row = await queue.get(task_id)
        self.claim = Claim(task_id, worker_id, str(held.get("claim_token") or ""), str((row or {}).get("goal") or ""))
        return True

    async def _heartbeat(self) -> None:
        period = self.runtime.settings.colonies.heartbeat_s
        while True:
            await asyncio.sleep(period)
            if self.claim is not None:
                await self.runtime.queue.heartbeat(self.claim.task_id, self.claim.worker_id)

    async def checkpoint(self, ctx: RunContext, kind: str, *, is_clean: bool = True) -> str:
        rt = self.runtime
        now = rt.clock.now()
        store = self.store
        cp_id = await store.new_checkpoint_id(kind, "worker", now)
        body = build_checkpoint(self, ctx, kind, cp_id, now, is_clean=is_clean)
        self._state["latest_checkpoint_id"] = cp_id
        self._state["timestamps"]["updated_at"] = utc_iso(now)
        self._state["progress"]["steps_executed"] = ctx.state.iteration
        self._state["progress"]["total_tokens"] = ctx.state.input_tokens + ctx.state.output_tokens
        state = _snapshot(self._state)   # the write must not see later changes
        force_index = kind in ("node_start", "node_complete", "interrupted")
        await self._file_io(lambda: store.save(body, state, force_index=force_index))
        return cp_id

    # -- endings -------------------------------------------------------------------------------

    async def _write_end(self, status: str, *, error: str | None = None, output: dict[str, Any] | None = None,
                   run_event: str) -> None:
        rt = self.runtime
        now = utc_iso(rt.clock.now())
        if not self._state:   # ended before its files were begun
            self._state = self._new_state()
        state = self._state
        state["status"] = status
        state["timestamps"]["updated_at"] = now
        if status in ("completed", "failed", "cancelled"):
            state["timestamps"]["completed_at"] = now
        if status == "paused":
            state["timestamps"]["paused_at_time"] = now
            state["progress"]["paused_at"] = "worker"
        state["result"] = {"success": status == "completed", "error": error, "output": output or {}}
        await self.store.end(_snapshot(state), self.request.run_id, run_event, rt.clock.now(), error)

    async def _final_checkpoint(self, kind: str, *, is_clean: bool) -> None:
        if self.loop is not None:
            ctx = self.loop.ctx
            try:
                await self.checkpoint(ctx, kind, is_clean=is_clean)
            except OSError:
                logger.exception("could not write the final checkpoint of %s", self.id)

    async def _finish_completed(self, outputs: dict[str, Any]) -> None:
        rt = self.runtime
        error = None
        if self.claim is not None:
            try:
                await rt.queue.complete(self.claim.task_id, self.claim.worker_id)
            except ApiaryError as exc:
                error = exc.message
                await rt.queue.fail(self.claim.task_id, self.claim.worker_id, error)
        if error is not None:
            await self._finish_failed(error)
            return
        self.status = "completed"
        await self._final_checkpoint("node_complete", is_clean=True)
        await self._write_end("completed", output=outputs, run_event="run_completed")
        self.result = {"status": "completed", "summary": _summary(outputs), "error": None}
        await self._event("execution_completed", {"output": outputs}, final=True)
        await rt.execution_ended(self)

    async def _finish_failed(self, error: str) -> None:
        rt = self.runtime
        self.status = "failed"
        if self.claim is not None:
            await rt.queue.fail(self.claim.task_id, self.claim.worker_id, error)
        await self._final_checkpoint("interrupted", is_clean=False)
        await self._write_end("failed", error=error, run_event="run_failed")
        self.result = {"status": "failed", "summary": "", "error": error}
        await self._event("execution_failed", {"error": error}, final=True)
        await rt.execution_ended(self)

    async def _on_cancelled(self) -> None:
        if self._io is not None:   # let a file write under way finish before the final ones
            with contextlib.suppress(Exception):
                await self._io
        reason = self.cancel_reason or SHUTDOWN
        await self._final_checkpoint("interrupted", is_clean=False)
        if reason == SHUTDOWN:
            return   # left ``active``: resumed when the colony loads again
        paused = reason == PAUSED
        self.status = "paused" if paused else "cancelled"
        await self._write_end(self.status, error=None if paused else reason,
                                run_event="run_paused" if paused else "run_cancelled")
        self.result = {"status": self.status, "summary": "", "error": None if paused else reason}
        if paused:
            await self._event("execution_paused", {"reason": reason}, final=True)
        else:
            await self._event("execution_failed", {"error": reason, "cancelled": True}, final=True)
        await self.runtime.execution_ended(self)


def _snapshot(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of the parts of state.json an execution changes later (input data can be deep: no deepcopy)."""
    return {**state, "timestamps": dict(state.get("timestamps") or {}), "progress": dict(state.get("progress") or {}),
            "result": dict(state.get("result") or {})}


def _run_ended_at(checkpoint: dict[str, Any]) -> bool:
    loop = checkpoint.get("loop")
    accepted = isinstance(loop, dict) and loop.get("accepted") is True
    return checkpoint.get("checkpoint_type") == "node_complete" or accepted


def _summary(outputs: dict[str, Any]) -> str:
    value = outputs.get("result", next(iter(outputs.values()), "")) if outputs else ""
    return str(value)[:500]
