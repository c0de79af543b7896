"""Opening a colony into a session (SPEC A 3.2). Colonies arrive with the colonies package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apiary.core.errors import InvalidRequest, NotFound
from apiary.server.state import AppState
from apiary.sessions.session import Session


def resolve_agent_path(state: AppState, agent_path: str) -> Path:
    root = state.deps.layout.colonies.resolve()
    path = Path(agent_path).expanduser()
    path = (path if path.is_absolute() else root / path).resolve()
    if path != root and root not in path.parents:
        raise InvalidRequest(f"agent_path must lie inside the colonies folder {root}")
    if path == root or not path.is_dir():
        raise NotFound(f"Agent not found: {agent_path}")
    return path


async def open_colony_session(state: AppState, fields: dict[str, Any]) -> Session:
    resolve_agent_path(state, fields["agent_path"])
    raise NotFound(f"Agent not found: {fields['agent_path']}")
