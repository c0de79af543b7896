"""JSON views of a colony's workers, worker sessions and checkpoints (SPEC A 3.6, 3.8)."""

from __future__ import annotations

from typing import Any

from apiary.colonies.runtime import ColonyRuntime
from apiary.colonies.worker_session import LISTED
from apiary.core.clock import utc_iso
from apiary.storage.base import WorkerSessionStore


def worker_json(runtime: ColonyRuntime, execution_id: str) -> dict[str, Any] | None:
    execution = runtime.active().get(execution_id) or runtime.finished.get(execution_id)
    if execution is None:
        return None
    claim = execution.claim
    result = None
    if execution.result is not None:
        duration = round((execution.ended_at or runtime.clock.now()) - execution.started_at, 3)
        loop_state = execution.loop.ctx.state if execution.loop else None
        tokens = loop_state.input_tokens + loop_state.output_tokens if loop_state else \
            int(execution.result.get("tokens_used") or 0)   # a worker process reports them
        result = {"status": execution.result["status"], "summary": execution.result.get("summary", ""),
                  "error": execution.result.get("error"), "tokens_used": tokens, "duration_seconds": duration}
    active = execution_id in runtime.active()
    return {"worker_id": execution_id, "task": claim.goal if claim else "",
            "status": execution.status if active else "historical",
            "started_at": utc_iso(execution.started_at) if execution.started_at else None, "result": result}


def workers_json(runtime: ColonyRuntime | None) -> dict[str, Any]:
    if runtime is None:
        return {"workers": []}
    ids = list(runtime.active()) + [eid for eid in runtime.finished if eid not in runtime.active()]
    return {"workers": [w for w in (worker_json(runtime, eid) for eid in ids) if w is not None]}


async def _session_json(store: WorkerSessionStore) -> dict[str, Any] | None:
    try:
        state = await store.read_state() or {}
    except (ValueError, OSError):
        state = {}
    checkpoints = await store.list_checkpoints()
    status = str(state.get("status") or "active")
    stamps = state.get("timestamps") or {}
    return {"worker_session_id": store.id, "status": status, "entry_point": state.get("entry_point", "default"),
            "started_at": stamps.get("started_at"), "updated_at": stamps.get("updated_at"),
            "current_run_id": state.get("current_run_id"),
            "latest_checkpoint_id": checkpoints[-1]["checkpoint_id"] if checkpoints else None,
            "checkpoint_count": len(checkpoints), "is_resumable": status != "active" and bool(checkpoints)}


async def worker_sessions_json(runtime: ColonyRuntime) -> dict[str, Any]:
    items = [s for s in [await _session_json(f) for f in await runtime.worker_session_stores()] if s is not None]
    items.sort(key=lambda s: str(s.get("updated_at") or s.get("started_at") or ""), reverse=True)
    return {"worker_sessions": items}


async def checkpoints_json(store: WorkerSessionStore) -> dict[str, Any]:
    listed = await store.list_checkpoints()
    return {"worker_session_id": store.id,
            "latest_checkpoint_id": listed[-1]["checkpoint_id"] if listed else None,
            "checkpoints": [{**{k: c.get(k) for k in LISTED}, "run_id": c.get("run_id"),
                             "next_node": c.get("next_node")} for c in listed]}
