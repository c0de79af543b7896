"""A worker session directory (SPEC B 6.4, 3.9): ``state.json``, ``runs.jsonl`` and checkpoint files.

Checkpoint files are written atomically, one per checkpoint; ``index.json`` lists them. The index
is rewritten at the start and end of an execution and every ``INDEX_EVERY`` checkpoints (not at
each one, which would make a long run's writes grow with the square of its length); listing
reads the files themselves, so it never depends on the index being current.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apiary.core.clock import utc_iso
from apiary.core.jsonfile import read_json, write_json
from apiary.core.safety import is_safe_segment

INDEX_EVERY = 10
_CP_NUMBER = re.compile(r"_(\d+)$")
LISTED = ("checkpoint_id", "checkpoint_type", "created_at", "current_node", "is_clean", "description")


def _number(checkpoint_id: str) -> int:
    match = _CP_NUMBER.search(checkpoint_id)
    return int(match.group(1)) if match else 0


class WorkerSessionFiles:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints_dir = path / "checkpoints"
        self._counter: int | None = None
        self._since_index = 0
        self._index: dict[str, dict[str, Any]] | None = None

    @property
    def id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "state.json").is_file() or self.checkpoints_dir.is_dir()

    # -- state.json ------------------------------------------------------------------------------

    def read_state(self) -> dict[str, Any] | None:
        path = self.path / "state.json"
        if not path.exists():
            return None
        value = json.loads(path.read_text(encoding="utf-8"))   # errors reach the caller: resume answers 500
        if not isinstance(value, dict):
            raise ValueError("state.json is not an object")
        return value

    def write_state(self, state: dict[str, Any]) -> None:
        write_json(self.path / "state.json", state, durable=False)

    def append_run(self, run_id: str, event: str, now: float, error: str | None = None) -> None:
        line: dict[str, Any] = {"run_id": run_id, "event": event, "timestamp": utc_iso(now), "created_at": now}
        if error is not None:
            line["error"] = error[:500]
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "runs.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    # -- checkpoints -----------------------------------------------------------------------------

    def _next_number(self) -> int:
        if self._counter is None:
            self._counter = max((_number(p.stem) for p in self.checkpoints_dir.glob("cp_*.json")), default=0)
        self._counter += 1
        return self._counter

    def new_checkpoint_id(self, kind: str, node: str, now: float) -> str:
        when = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d_%H%M%S")
        return f"cp_{kind}_{node}_{when}_{self._next_number()}"

    def _entries(self) -> dict[str, dict[str, Any]]:
        """The index kept in memory: from ``index.json`` when it is readable, else from the files."""
        if self._index is None:
            saved = read_json(self.checkpoints_dir / "index.json")
            listed = saved.get("checkpoints") if isinstance(saved, dict) else None
            if not isinstance(listed, list) or any(not isinstance(c, dict) for c in listed):
                listed = [{k: c.get(k) for k in LISTED} for c in self.list_checkpoints()]
            self._index = {str(c.get("checkpoint_id")): c for c in listed}
        return self._index

    def write_checkpoint(self, checkpoint: dict[str, Any], *, force_index: bool = False) -> None:
        write_json(self.checkpoints_dir / f"{checkpoint['checkpoint_id']}.json", checkpoint, durable=False)
        self._entries()[checkpoint["checkpoint_id"]] = {k: checkpoint.get(k) for k in LISTED}
        self._since_index += 1
        if force_index or self._since_index >= INDEX_EVERY:
            self.write_index()

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """Every readable checkpoint file, oldest first."""
        found = []
        for path in self.checkpoints_dir.glob("cp_*.json"):
            raw = read_json(path)
            if isinstance(raw, dict) and raw.get("checkpoint_id") == path.stem:
                found.append(raw)
        found.sort(key=lambda c: (_number(c["checkpoint_id"]), str(c.get("created_at", ""))))
        return found

    def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        if not is_safe_segment(checkpoint_id):
            return None
        raw = read_json(self.checkpoints_dir / f"{checkpoint_id}.json")
        if not isinstance(raw, dict):
            return None
        raw.setdefault("checkpoint_id", checkpoint_id)
        return raw

    def latest_checkpoint(self) -> dict[str, Any] | None:
        listed = self.list_checkpoints()
        return listed[-1] if listed else None

    def write_index(self) -> None:
        listed = sorted(self._entries().values(), key=lambda c: _number(str(c.get("checkpoint_id"))))
        write_json(self.checkpoints_dir / "index.json", {
            "session_id": self.id,
            "checkpoints": listed,
            "latest_checkpoint_id": listed[-1]["checkpoint_id"] if listed else None,
        }, durable=False)
        self._since_index = 0


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
