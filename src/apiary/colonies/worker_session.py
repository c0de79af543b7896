"""A new worker session's state (SPEC B 6.4) and the recovery of those a dead process left ``active``;
the files themselves are kept by the storage layer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from apiary.core.clock import utc_iso
from apiary.storage.worker_session_files import LISTED, WorkerSessionFiles

if TYPE_CHECKING:
    from apiary.colonies.runtime import ColonyRuntime

__all__ = ["LISTED", "WorkerSessionFiles", "new_state", "recover_stale_sessions"]


def new_state(worker_session_id: str, *, entry_point: str, colony: str, input_data: dict[str, Any], run_id: str,
              now: float) -> dict[str, Any]:
    stamp = utc_iso(now)
    return {
        "schema_version": "1.1", "session_id": worker_session_id, "stream_id": entry_point, "correlation_id": None,
        "status": "active", "goal_id": colony, "agent_id": colony, "entry_point": entry_point,
        "timestamps": {"started_at": stamp, "updated_at": stamp, "completed_at": None, "paused_at_time": None},
        "progress": {"current_node": "worker", "paused_at": None, "resume_from": None, "steps_executed": 0,
                     "total_tokens": 0, "total_latency_ms": 0, "path": ["worker"], "total_retries": 0,
                     "nodes_with_failures": [], "retry_details": {}, "had_partial_failures": False,
                     "execution_quality": "clean", "node_visit_counts": {"worker": 1}},
        "result": {"success": None, "error": None, "output": {}},
        "data_buffer": {}, "metrics": {}, "problems": [], "decisions": [], "input_data": input_data,
        "current_run_id": run_id, "pid": os.getpid(), "isolation_level": "shared", "checkpoint_enabled": True,
        "latest_checkpoint_id": None, "active_triggers": [], "trigger_tasks": {}, "worker_configured": True,
    }


async def recover_stale_sessions(runtime: ColonyRuntime) -> None:
    """Worker sessions left ``active`` by a dead process: resume the newest, cancel the rest (B 2.4)."""
    stale = []
    for store in await runtime.worker_session_stores():
        try:
            state = await store.read_state()
        except (ValueError, OSError):
            continue
        if state and state.get("status") == "active":
            stale.append((str(state.get("timestamps", {}).get("updated_at") or ""), store, state))
    stale.sort(key=lambda item: item[0])
    resume = stale.pop() if stale and runtime.settings.colonies.resume_stale_sessions else None
    for _, store, state in stale:
        state["status"] = "cancelled"
        state["result"] = {"success": False, "error": "Stale session: runtime restarted", "output": {}}
        await store.write_state(state)
    if resume is not None:
        _, store, state = resume
        checkpoint = await store.latest_checkpoint()
        if checkpoint is not None:
            await runtime.resume(store.id, checkpoint, state, entry_point=str(state.get("entry_point") or "default"))
