"""Typed application state under one ``web.AppKey``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from apiary.bus.bus import EventBus
from apiary.core.clock import Clock
from apiary.core.config import Settings
from apiary.sessions.deps import SessionDeps
from apiary.sessions.manager import SessionManager
from apiary.sessions.session import Session


@dataclass(frozen=True)
class AppState:
    settings: Settings
    deps: SessionDeps
    sessions: SessionManager

    @property
    def bus(self) -> EventBus:
        return self.deps.bus

    @property
    def clock(self) -> Clock:
        return self.deps.clock


APP_STATE = web.AppKey("apiary.state", AppState)


def app_state(request: web.Request) -> AppState:
    return request.app[APP_STATE]


async def live_session(request: web.Request) -> Session:
    """The session named in the path, restored if it was live at the last stop (404 otherwise)."""
    return await app_state(request).sessions.get_live(request.match_info["session_id"])
