"""A colony folder as loaded from disk (SPEC B 6.5): worker spec, metadata, tool allowlist, triggers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiary.core.jsonfile import read_json

NOT_WORKER_SPECS = frozenset({"agent", "flowchart", "triggers", "configuration", "metadata", "tools"})


@dataclass(frozen=True)
class EntryPoint:
    id: str
    name: str
    trigger_type: str = "manual"
    trigger_config: dict[str, Any] = field(default_factory=dict)
    entry_node: str = "worker"
    isolation_level: str = "shared"
    priority: int = 0
    max_concurrent: int = 10
    max_resurrections: int = 3

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "entry_node": self.entry_node, "trigger_type": self.trigger_type,
                "trigger_config": self.trigger_config}


DEFAULT_ENTRY = EntryPoint("default", "Default")


def find_worker_spec(colony_dir: Path, worker_name: str | None = None) -> Path | None:
    """The worker spec file: ``<worker_name>.json`` if named, else the first ``*.json`` by name that is one."""
    if worker_name:
        path = colony_dir / f"{worker_name}.json"
        return path if path.is_file() else None
    for path in sorted(colony_dir.glob("*.json")):
        if path.stem in NOT_WORKER_SPECS:
            continue
        raw = read_json(path)
        if isinstance(raw, dict) and "system_prompt" in raw:
            return path
    return None


@dataclass
class ColonySpec:
    name: str
    path: Path
    spec_path: Path
    worker: dict[str, Any]
    metadata: dict[str, Any]
    enabled_mcp_tools: list[str] | None
    triggers: list[dict[str, Any]]

    @staticmethod
    def load(colony_dir: Path, worker_name: str | None = None) -> ColonySpec | None:
        spec_path = find_worker_spec(colony_dir, worker_name)
        if spec_path is None:
            return None
        worker = read_json(spec_path, {})
        metadata = read_json(colony_dir / "metadata.json", {})
        tools = read_json(colony_dir / "tools.json", {})
        triggers = read_json(colony_dir / "triggers.json", [])
        enabled = tools.get("enabled_mcp_tools") if isinstance(tools, dict) else None
        return ColonySpec(
            name=colony_dir.name, path=colony_dir, spec_path=spec_path,
            worker=worker if isinstance(worker, dict) else {},
            metadata=metadata if isinstance(metadata, dict) else {},
            enabled_mcp_tools=enabled if isinstance(enabled, list) else None,
            triggers=[t for t in triggers if isinstance(t, dict)] if isinstance(triggers, list) else [],
        )

    @property
    def display_name(self) -> str:
        return self.name.replace("_", " ").title()

    @property
    def goal(self) -> dict[str, Any]:
        goal = self.worker.get("goal")
        return goal if isinstance(goal, dict) else {}

    @property
    def goal_description(self) -> str:
        return str(self.goal.get("description") or "")

    @property
    def description(self) -> str:
        return str(self.worker.get("description") or "")

    @property
    def system_prompt(self) -> str:
        return str(self.worker.get("system_prompt") or "")

    @property
    def tool_names(self) -> list[str] | None:
        tools = self.worker.get("tools")
        return [str(t) for t in tools] if isinstance(tools, list) else None

    @property
    def loop_config(self) -> dict[str, Any]:
        cfg = self.worker.get("loop_config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def input_data(self) -> dict[str, Any]:
        data = self.worker.get("input_data")
        return data if isinstance(data, dict) else {}

    def entry_points(self) -> list[EntryPoint]:
        points = [DEFAULT_ENTRY]
        for raw in self.worker.get("entry_points") or []:
            if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"] != "default":
                points.append(EntryPoint(raw["id"], str(raw.get("name") or raw["id"]),
                                         str(raw.get("trigger_type") or "manual"),
                                         dict(raw.get("trigger_config") or {})))
        return points

    def success_criteria(self) -> list[tuple[str, str]]:
        """(id, description) of each success criterion; a string's id is ``c<position>``."""
        found = []
        for i, raw in enumerate(self.goal.get("success_criteria") or [], start=1):
            if isinstance(raw, str):
                found.append((f"c{i}", raw))
            elif isinstance(raw, dict):
                found.append((str(raw.get("id") or f"c{i}"), str(raw.get("description") or "")))
        return found


SPEC_FILE_LIMIT = 1_000_000


def spec_files(colony_dir: Path) -> dict[str, str]:
    """The colony's own files (its top-level ``*.json``): what a worker host needs to run it."""
    files: dict[str, str] = {}
    for path in sorted(colony_dir.glob("*.json")):
        if path.is_file() and path.stat().st_size <= SPEC_FILE_LIMIT:
            files[path.name] = path.read_text(encoding="utf-8")
    return files
