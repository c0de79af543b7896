"""Routes that talk to the queen: chat, queen-context, cancel-queen, the session lock (SPEC A 2.3-2.4,
2.10-2.11). Colony spawn and compact-and-fork live in routes/fork.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apiary.agent.context import InboxItem
from apiary.core.errors import ApiaryError, InvalidRequest, SessionLocked, Unavailable
from apiary.server.body import optional, read_body, required_str
from apiary.server.routing import LIST, STR, Route, obj
from apiary.server.state import live_session
from apiary.sessions.session import Session

LOCK_MESSAGE = ("This conversation spawned a colony and is locked. Compact it and start a new session with the "
                "same queen (POST /compact-and-fork) to go on.")


def _check_images(images: list[Any]) -> list[dict[str, Any]]:
    for i, block in enumerate(images):
        url = block.get("image_url") if isinstance(block, dict) else None
        if (not isinstance(block, dict) or block.get("type") != "image_url" or not isinstance(url, dict)
                or not isinstance(url.get("url"), str)):
            raise InvalidRequest(f"images[{i}] must be an image_url block")
    return images


async def ensure_queen(session: Session) -> bool:
    """Start the queen if her loop ended. True when she had to be revived."""
    if session.queen.is_running:
        return False
    try:
        await session.queen.start()
    except ApiaryError:
        raise
    except Exception as exc:
        raise Unavailable("Queen not available") from exc
    return True


async def chat(request: web.Request) -> web.Response:
    session = await live_session(request)
    if session.colony_spawned:
        locked = SessionLocked("session_locked", reason="colony_spawned",
                               spawned_colony_name=session.spawned_colony_name)
        locked.extra["message"] = LOCK_MESSAGE   # not a keyword: ApiaryError's own first parameter is `message`
        raise locked
    body = await read_body(request)
    message = optional(body, "message", str, "")
    display = optional(body, "display_message", str)
    images = _check_images(optional(body, "images", list, []))
    if message == "" and not images:
        raise InvalidRequest("message is required")
    revived = await ensure_queen(session)
    seq = await session.publish("client_input_received",
                                {"content": display if display is not None else message, "image_count": len(images)})
    if not session.queen.deliver(InboxItem(message, "client", images)):
        raise Unavailable("Queen not available")
    return web.json_response({"status": "queen_revived" if revived else "queen", "delivered": True,
                              "after_seq": seq})


async def queen_context(request: web.Request) -> web.Response:
    session = await live_session(request)
    body = await read_body(request)
    message = required_str(body, "message")
    revived = await ensure_queen(session)
    if not session.queen.deliver(InboxItem(message, "event")):
        raise Unavailable("Queen not available")
    return web.json_response({"status": "queued_revived" if revived else "queued", "delivered": True})


async def cancel_queen(request: web.Request) -> web.Response:
    session = await live_session(request)
    if session.queen.loop is None:
        return web.json_response({"cancelled": False, "error": "Queen not active"}, status=404)
    was_running = session.queen.cancel_turn()
    return web.json_response({"cancelled": True, "turn_was_running": was_running})


async def mark_colony_spawned(request: web.Request) -> web.Response:
    session = await live_session(request)
    body = await read_body(request)
    name = required_str(body, "colony_name").strip()
    try:
        session.lock(name)
    except OSError as exc:
        return web.json_response({"error": f"failed to persist: {exc}"}, status=500)
    return web.json_response({"session_id": session.id, "colony_spawned": True, "spawned_colony_name": name})


SID = "/api/sessions/{session_id}"
IMAGES = {**LIST, "items": {"type": "object"}}
ROUTES = [
    Route("POST", SID + "/chat", chat, "Send a user message to the queen",
          obj(message=STR, display_message=STR, images=IMAGES)),
    Route("POST", SID + "/queen-context", queen_context, "Hand the queen outside context", obj(message=STR)),
    Route("POST", SID + "/cancel-queen", cancel_queen, "Cancel the queen's current turn"),
    Route("POST", SID + "/mark-colony-spawned", mark_colony_spawned, "Lock the queen conversation",
          obj(colony_name=STR)),
]
