"""Route modules; each exposes ``ROUTES``, a list of ``routing.Route``."""

from __future__ import annotations

from apiary.server.routes import (
    browser,
    colony,
    colony_data,
    config_routes,
    debug,
    discover,
    events,
    execution,
    fork,
    library,
    misc,
    progress,
    queen,
    queens,
    sessions,
    task_lists,
    triggers,
)
from apiary.server.routing import Route

ALL_ROUTES: list[Route] = [
    *misc.ROUTES, *queens.ROUTES, *sessions.ROUTES, *events.ROUTES, *queen.ROUTES, *execution.ROUTES,
    *colony.ROUTES, *progress.ROUTES, *fork.ROUTES, *triggers.ROUTES,
    # part C: the routes an existing Hive web client calls
    *config_routes.ROUTES, *library.ROUTES, *discover.ROUTES, *task_lists.ROUTES, *colony_data.ROUTES,
    *browser.ROUTES, *debug.ROUTES,
]
