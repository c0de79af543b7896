"""SessionManager: creates, restores, lists and ends sessions; owns every queen task.

Never holds a lock across slow I/O except the per-id lock that keeps two requests from
restoring the same session twice.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import weakref
from typing import Any

from apiary.core.clock import utc_iso
from apiary.core.errors import Conflict, InvalidRequest, NotFound
from apiary.core.safety import require_safe_segment
from apiary.llm.registry import parse_model_spec
from apiary.sessions.deps import SessionDeps
from apiary.sessions.files import StoredSession
from apiary.sessions.leases import SessionLeases
from apiary.sessions.parking import Parking
from apiary.sessions.phases import PHASES
from apiary.sessions.profiles import DEFAULT_QUEEN, QueenProfile, classify, get_profile
from apiary.sessions.session import Session

logger = logging.getLogger(__name__)


def check_phase(phase: str | None) -> None:
    if phase is not None and phase not in PHASES:
        raise InvalidRequest(f"Invalid initial_phase '{phase}'", valid=sorted(PHASES))


def require_profile(queen_id: str) -> QueenProfile:
    require_safe_segment(queen_id)
    profile = get_profile(queen_id)
    if profile is None:
        raise NotFound(f"Queen '{queen_id}' not found")
    return profile


class SessionManager:
    def __init__(self, deps: SessionDeps) -> None:
        self.deps = deps
        self.live: dict[str, Session] = {}       # in memory; parked sessions are in ``parking.records``
        # a lock lives while someone holds or awaits it, so ids that come and go leave nothing behind
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        coordination = deps.stores.coordination
        self.leases = SessionLeases(coordination, lease_s=deps.settings.sessions.lease_s, tasks=deps.tasks) \
            if coordination is not None else None   # several API servers on one database
        self.parking = Parking(self)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    # -- lookups ---------------------------------------------------------------------------------

    def loaded(self, session_id: str) -> Session | None:
        return self.live.get(session_id)

    def is_live(self, session_id: str) -> bool:
        """Live for clients: in memory or parked (SPEC C.6)."""
        return session_id in self.live or session_id in self.parking.records

    async def find_live(self, session_id: str) -> Session | None:
        """The live session, restoring a parked one; None when it is not live."""
        if session_id in self.parking.records:
            return await self.get_live(session_id)
        return self.live.get(session_id)

    def live_json(self) -> list[dict[str, Any]]:
        now = self.deps.clock.now()
        parked = [r.to_json(now) for sid, r in self.parking.records.items() if sid not in self.live]
        return [*(s.to_json() for s in self.live.values()), *parked]

    def newest_live_without_colony(self, queen_id: str) -> str | None:
        """The id of this queen's newest live session without a colony, parked ones included."""
        found = [(s.loaded_at, s.id) for s in self.live.values() if s.queen_id == queen_id and s.colony is None]
        found += [(r.loaded_at, r.session_id) for r in self.parking.records.values()
                  if r.queen_id == queen_id and r.colony_path is None and r.session_id not in self.live]
        return max(found)[1] if found else None

    def live_counts(self) -> tuple[int, int]:
        """(live sessions, those with a colony loaded), parked ones included."""
        parked = [r for sid, r in self.parking.records.items() if sid not in self.live]
        with_colony = sum(1 for s in self.live.values() if s.colony is not None)
        return len(self.live) + len(parked), with_colony + sum(1 for r in parked if r.colony_path)

    async def get_live(self, session_id: str) -> Session:
        """The live session, restoring one that was live at the last stop (SPEC A 1.8)."""
        session = self.live.get(session_id)
        if session is not None:
            session.touch()
            return session
        async with self._lock(session_id):
            session = self.live.get(session_id)
            if session is not None:
                return session
            stored = self.deps.index.get(session_id)
            if stored is None or stored.meta().get("ended_at"):
                self.parking.forget(session_id)
                raise NotFound(f"Session '{session_id}' not found")
            session = await self._open(stored, restore=True)
            self.parking.restored(session)
            return session

    def stored(self, session_id: str) -> StoredSession | None:
        return self.deps.index.get(session_id)

    # -- creating --------------------------------------------------------------------------------

    async def create(self, *, queen_id: str | None = None, session_id: str | None = None,
                     model: str | None = None, initial_prompt: str | None = None,
                     initial_phase: str | None = None, resume_from: str | None = None,
                     attach: bool = True) -> Session:
        check_phase(initial_phase)
        if queen_id is None:
            queen_id = classify(initial_prompt) if initial_prompt else DEFAULT_QUEEN
        profile = require_profile(queen_id)
        if model is not None:
            parse_model_spec(model)
        wanted = resume_from if resume_from is not None else session_id   # "" is checked, not ignored
        if wanted is not None:
            require_safe_segment(wanted)
            if self.is_live(wanted):
                raise Conflict(f"Session '{wanted}' already exists")
        async with self._lock(wanted or "__new__"):
            if wanted is not None and self.is_live(wanted):   # opened while this request waited for the lock
                raise Conflict(f"Session '{wanted}' already exists")
            stored = self.deps.index.get(wanted) if resume_from else None
            if stored is not None:
                return await self._open(stored, restore=True, phase=initial_phase, model=model, attach=attach)
            sid = wanted or self.new_id()
            if self.deps.index.get(sid) is not None and not resume_from:
                raise Conflict(f"Session '{sid}' already exists")
            stored = self.deps.index.create(profile.id, sid)
            return await self._open(stored, restore=False, phase=initial_phase or "independent", model=model,
                                    initial_prompt=initial_prompt, profile=profile)

    def new_id(self) -> str:
        while True:
            sid = self.deps.ids.session_id(self.deps.clock.now())
            if not self.is_live(sid) and self.deps.index.get(sid) is None:
                return sid

    async def _open(self, stored: StoredSession, *, restore: bool, phase: str | None = None,
                    model: str | None = None, initial_prompt: str | None = None,
                    profile: QueenProfile | None = None, attach: bool = True) -> Session:
        meta = stored.meta()
        profile = profile or get_profile(str(meta.get("queen_id") or stored.queen_id)) or get_profile(DEFAULT_QUEEN)
        assert profile is not None
        model_spec = model or str(meta.get("model") or self.deps.settings.model)
        phase = phase or str(meta.get("phase") or "independent")
        if self.leases is not None:
            await self.leases.acquire(stored.session_id)
        llm = self.deps.make_llm(model_spec)
        meta = await asyncio.to_thread(stored.merge_meta, {   # fsync: off the event loop
            "created_at": meta.get("created_at", self.deps.clock.now()), "queen_id": profile.id, "phase": phase,
            "model": model_spec}, remove=("ended_at",))
        session = Session(deps=self.deps, stored=stored, profile=profile, model_spec=model_spec, llm=llm,
                          phase=phase, meta=meta)
        self.live[session.id] = session
        if initial_prompt and not restore:
            await session.publish("client_input_received", {"content": initial_prompt, "image_count": 0})
        await session.queen.start(initial_prompt=initial_prompt, greet=not restore)
        loaded = meta.get("loaded_colony")
        if restore and attach and isinstance(loaded, str):
            await self._reattach(session, loaded)
        return session

    async def _reattach(self, session: Session, colony_dir: str) -> None:
        from pathlib import Path

        from apiary.sessions.colony_loading import attach_colony

        try:
            await attach_colony(session, Path(colony_dir))
        except Exception:
            logger.exception("could not reload colony %s into session %s", colony_dir, session.id)
            session.colony = None

    # -- ending ----------------------------------------------------------------------------------

    async def end(self, session_id: str) -> None:
        """DELETE /api/sessions/{id}: stop it and record ``ended_at`` so it stays cold."""
        self.parking.forget(session_id)
        session = self.live.pop(session_id, None)
        stored = session.stored if session else self.deps.index.get(session_id)
        if stored is None:
            raise NotFound(f"Session '{session_id}' not found")
        if session is not None:
            await self._stop(session)
        await asyncio.to_thread(stored.merge_meta, {"ended_at": utc_iso(self.deps.clock.now())})

    async def _stop(self, session: Session) -> None:
        self.deps.bus.end_session(session.id)
        if session.colony is not None:
            await session.colony.aclose()
        await session.queen.stop()
        if session.mcp:
            await session.mcp.aclose()
        await session.llm.aclose()
        if self.leases is not None:
            await self.leases.release(session.id)

    async def delete_stored(self, session_id: str) -> None:
        require_safe_segment(session_id)
        stored = self.deps.index.get(session_id)
        if stored is None and session_id not in self.live:
            raise NotFound(f"Session '{session_id}' not found")
        self.parking.forget(session_id)
        session = self.live.pop(session_id, None)
        if session is not None:
            await self._stop(session)
            stored = session.stored
        assert stored is not None
        await self.deps.stores.events.delete_session(session_id)
        await self.deps.stores.conversations.delete(f"queen:{session_id}")
        await asyncio.to_thread(shutil.rmtree, stored.dir, True)
        self.deps.index.forget(session_id)

    async def aclose(self) -> None:
        """Shutdown: bring every live session to a stop; they come back on first use."""
        await self.parking.aclose()
        sessions = list(self.live.values())
        self.live.clear()
        await asyncio.gather(*(self._stop(s) for s in sessions), return_exceptions=True)
        if self.leases is not None:
            await self.leases.release_all()

    # -- listings --------------------------------------------------------------------------------

    def cold_shape(self, stored: StoredSession) -> dict[str, Any]:
        meta = stored.meta()
        summary = stored.summary()
        return {"session_id": stored.session_id, "cold": True, "live": False,
                "has_messages": bool(summary.get("message_count")), "created_at": meta.get("created_at"),
                "agent_name": meta.get("agent_name"), "agent_path": meta.get("agent_path"),
                "colony_spawned": bool(meta.get("colony_spawned")),
                "spawned_colony_name": meta.get("spawned_colony_name"),
                # apiary additions: whose session it is, and whether the next request brings it back (A 1.8)
                "queen_id": meta.get("queen_id", stored.queen_id), "restorable": not meta.get("ended_at")}

    def history(self) -> list[dict[str, Any]]:
        items = []
        for stored in self.deps.index.all():
            meta = stored.meta()
            if meta.get("colony_fork"):
                continue
            summary = stored.summary()
            live = self.is_live(stored.session_id)
            items.append({
                "session_id": stored.session_id, "cold": not live, "live": live,
                "has_messages": bool(summary.get("message_count")), "created_at": meta.get("created_at"),
                "last_active_at": summary.get("last_active_at", meta.get("created_at")),
                "agent_name": meta.get("agent_name"), "agent_path": meta.get("agent_path"),
                "last_message": summary.get("last_message", ""), "message_count": summary.get("message_count", 0),
                "queen_id": meta.get("queen_id", stored.queen_id)})
        items.sort(key=lambda i: i["last_active_at"] or 0, reverse=True)
        return items
