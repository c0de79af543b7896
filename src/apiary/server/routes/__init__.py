"""Route modules; each exposes ``ROUTES``, a list of ``routing.Route``."""

from __future__ import annotations

from apiary.server.routes import colony, events, execution, fork, misc, progress, queen, queens, sessions, triggers
from apiary.server.routing import Route

ALL_ROUTES: list[Route] = [
    *misc.ROUTES, *queens.ROUTES, *sessions.ROUTES, *events.ROUTES, *queen.ROUTES, *execution.ROUTES,
    *colony.ROUTES, *progress.ROUTES, *fork.ROUTES, *triggers.ROUTES,
]
