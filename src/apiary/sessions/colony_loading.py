"""Loading a colony into a session and unloading it (SPEC A 3.2, B 2.1, 6.5, 8)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from apiary.colonies.runtime import ColonyRuntime
from apiary.colonies.spec import ColonySpec
from apiary.core.errors import Conflict, NotFound
from apiary.core.jsonfile import read_json
from apiary.sessions.manager import SessionManager
from apiary.sessions.session import Session

logger = logging.getLogger(__name__)
COMPACTION_POLL_S = 0.5


async def attach_colony(session: Session, colony_dir: Path, *, worker_name: str | None = None,
                        model: str | None = None) -> ColonyRuntime:
    deps = session.deps
    spec = await asyncio.to_thread(ColonySpec.load, colony_dir, worker_name)
    if spec is None:
        raise NotFound(f"Agent not found: {colony_dir}")
    worker_model = model or deps.settings.worker_model or session.model_spec
    runtime = ColonyRuntime(host=session, spec=spec, settings=deps.settings, layout=deps.layout, stores=deps.stores,
                            bus=deps.bus, clock=deps.clock, ids=deps.ids, worker_llm=deps.make_llm(worker_model))
    runtime.worker_model_spec = worker_model
    session.colony = runtime
    await asyncio.to_thread(session.stored.merge_meta, {"loaded_colony": str(colony_dir)})
    await runtime.load()
    return runtime


async def detach_colony(session: Session) -> None:
    runtime = session.colony
    if runtime is None:
        raise Conflict("No colony loaded in this session")
    session.colony = None
    await runtime.aclose()
    await asyncio.to_thread(session.stored.merge_meta, {}, remove=("loaded_colony",))


async def wait_for_compaction(session_dir: Path, timeout_s: float) -> dict[str, Any] | None:
    """Poll ``compaction_status.json`` every 0.5 s until it is not ``in_progress`` (at most ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    status = read_json(session_dir / "compaction_status.json")
    while isinstance(status, dict) and status.get("status") == "in_progress" and loop.time() < deadline:
        await asyncio.sleep(COMPACTION_POLL_S)
        status = read_json(session_dir / "compaction_status.json")
    return status if isinstance(status, dict) else None


async def open_colony(manager: SessionManager, colony_dir: Path, *, session_id: str | None,
                      resume_from: str | None, model: str | None, queen_id: str | None,
                      initial_phase: str | None, worker_name: str | None) -> Session:
    """Open a colony: in the session its metadata names, else the one asked for, else a new one."""
    metadata = read_json(colony_dir / "metadata.json", {})
    named = metadata.get("queen_session_id") if isinstance(metadata, dict) else None
    wanted = str(named) if named else (resume_from or session_id)
    if await asyncio.to_thread(ColonySpec.load, colony_dir, worker_name) is None:
        raise NotFound(f"Agent not found: {colony_dir}")
    live = await manager.find_live(wanted) if wanted else None
    if live is not None:
        if live.colony is not None and live.colony.path == colony_dir:
            return live
        if live.colony is not None:
            raise Conflict(f"Session '{live.id}' already has a colony loaded", colony_id=live.colony.name)
        await attach_colony(live, colony_dir, worker_name=worker_name, model=model)
        return live
    stored = manager.stored(wanted) if wanted else None
    if stored is not None:
        await wait_for_compaction(stored.dir, manager.deps.settings.colonies.compaction_timeout_s)
    phase = initial_phase or "working"
    if stored is not None:
        session = await manager.create(resume_from=wanted, initial_phase=phase, model=model, attach=False)
    else:
        session = await manager.create(queen_id=queen_id, session_id=wanted, initial_phase=phase, model=model,
                                       attach=False)
    await attach_colony(session, colony_dir, worker_name=worker_name, model=model)
    return session
