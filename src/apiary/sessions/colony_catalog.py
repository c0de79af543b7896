"""The colonies on disk, as the web client's colony list shows them, and deleting one (SPEC C.1, C.5).

A colony is a folder ``colonies/<name>/`` holding a worker spec; its worker sessions live in
``agents/<name>/sessions/`` and the conversation it inherited in ``agents/<name>/worker/`` (B 6.1).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from apiary.colonies.spec import ColonySpec
from apiary.core.layout import Layout
from apiary.core.safety import COLONY_NAME
from apiary.sessions.colony_loading import detach_colony
from apiary.sessions.manager import SessionManager

CATEGORY: Final = "Colonies"
WORKER_STORAGE: Final = ("sessions", "worker")   # what a colony owns under agents/<name>/


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _runs(session_dir: Path) -> int:
    try:
        lines = (session_dir / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        try:
            count += json.loads(line).get("event") == "run_started"
        except (ValueError, AttributeError):
            continue
    return count


def _worker_sessions(layout: Layout, name: str) -> tuple[int, int, float | None]:
    """(worker sessions, runs, newest change) from ``agents/<name>/sessions/``."""
    root = layout.worker_sessions(name)
    dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    newest = max((p.stat().st_mtime for p in dirs), default=None)
    return len(dirs), sum(_runs(p) for p in dirs), newest


def colony_entry(layout: Layout, spec: ColonySpec) -> dict[str, Any]:
    meta = spec.metadata
    sessions, runs, newest = _worker_sessions(layout, spec.name)
    created = meta.get("created_at") or _iso(spec.spec_path.stat().st_mtime)
    last = _iso(newest) if newest is not None else meta.get("updated_at") or created
    workers = meta.get("workers") if isinstance(meta.get("workers"), dict) else {}
    return {
        "path": str(spec.path), "name": spec.display_name,
        "description": spec.description or spec.goal_description,
        "session_count": sessions, "run_count": runs, "created_at": created, "last_active": last,
        "workers": [{"queen_name": meta.get("queen_name"), "task": (w or {}).get("task", "")}
                    for w in workers.values() if isinstance(w, dict)],
        "icon": meta.get("icon"),
    }


def discover(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    """Every colony on disk, most recently active first, under one category; ``{}`` when there is none."""
    root = layout.colonies
    entries = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or not COLONY_NAME.match(folder.name):
            continue
        spec = ColonySpec.load(folder)
        if spec is not None:
            entries.append(colony_entry(layout, spec))
    entries.sort(key=lambda e: str(e["last_active"] or ""), reverse=True)
    return {CATEGORY: entries} if entries else {}


async def _forget_worker_rows(manager: SessionManager, name: str) -> None:
    stores = manager.deps.stores
    root = manager.deps.layout.worker_sessions(name)
    ids = await asyncio.to_thread(lambda: [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
    for worker_session_id in ids:
        owner = f"worker:{name}:{worker_session_id}"
        await stores.conversations.delete(owner)
        await stores.recordings.delete(owner)


def _remove_files(layout: Layout, colony_dir: Path) -> None:
    agents = layout.home / "agents" / colony_dir.name
    for part in WORKER_STORAGE:
        shutil.rmtree(agents / part, ignore_errors=True)
    if agents.is_dir() and not any(agents.iterdir()):
        agents.rmdir()
    shutil.rmtree(colony_dir)


async def delete_colony(manager: SessionManager, colony_dir: Path) -> None:
    """Unload the colony from every live session that has it (parked ones are restored first), then
    delete its folder (queue included), its worker storage and its workers' conversations."""
    for session_id, record in list(manager.parking.records.items()):
        if record.colony_path == str(colony_dir):
            await manager.find_live(session_id)
    for session in list(manager.live.values()):
        if session.colony is not None and Path(session.colony.path) == colony_dir:
            await detach_colony(session)
    await _forget_worker_rows(manager, colony_dir.name)
    await asyncio.to_thread(_remove_files, manager.deps.layout, colony_dir)
