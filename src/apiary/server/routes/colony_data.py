"""The colony data browser: a read-only view of a colony's ``progress.db`` (SPEC C.5)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from apiary.core.errors import InvalidRequest
from apiary.server.routes.progress import colony_db
from apiary.server.routing import Route
from apiary.storage.sqlite import data_browser

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _int_query(request: web.Request, name: str, default: int, *, minimum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if value < minimum:
        raise InvalidRequest(f"{name} must be at least {minimum}")
    return value


async def tables(request: web.Request) -> web.Response:
    db = colony_db(request)
    return web.json_response({"tables": await asyncio.to_thread(data_browser.list_tables, db)})


async def rows(request: web.Request) -> web.Response:
    db = colony_db(request)
    table = request.match_info["table"]
    limit = min(_int_query(request, "limit", DEFAULT_LIMIT, minimum=1), MAX_LIMIT)
    offset = _int_query(request, "offset", 0, minimum=0)
    order_by = request.query.get("order_by") or None
    order_dir = (request.query.get("order_dir") or "asc").strip().lower()
    if order_dir not in ("asc", "desc"):
        raise InvalidRequest("order_dir must be 'asc' or 'desc'")
    page = await asyncio.to_thread(data_browser.read_rows, db, table, limit=limit, offset=offset,
                                   order_by=order_by, descending=order_dir == "desc")
    return web.json_response(page)


TABLES = "/api/colonies/{colony_name}/data/tables"
ROUTES = [
    Route("GET", TABLES, tables, "Tables of a colony's progress.db, colony_meta first"),
    Route("GET", TABLES + "/{table}/rows", rows, "One page of rows of a table of a colony's progress.db"),
]
