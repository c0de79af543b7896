"""The state of a new worker session (SPEC B 6.4); the files themselves are kept by the storage layer."""

from __future__ import annotations

import os
from typing import Any

from apiary.core.clock import utc_iso
from apiary.storage.worker_session_files import LISTED, WorkerSessionFiles

__all__ = ["LISTED", "WorkerSessionFiles", "new_state"]


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
