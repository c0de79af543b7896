"""The session event stream and its history (SPEC A 3.3, 4).

The history without ``after`` (the web client's first load, and the soak's read on every step) is read
in bounded pieces: the page from growing windows at the tail of the log, ``total`` counted by the log
itself (``EventLog.count_collapsed``: in SQL on SQLite and PostgreSQL, no row decoded). Before, the
whole log was decoded and collapsed in one go on every call (after 10 minutes of soak 22,600 events,
8 MB of JSON per call for a page of 50), which both held the event loop (the collapse, ~30 ms) and
made the process's memory peak grow with the log.
"""

from __future__ import annotations

from aiohttp import web

from apiary.core.errors import InvalidRequest
from apiary.core.events import DEFAULT_STREAM_TYPES, StoredEvent, collapse_text_deltas
from apiary.server.routing import Route
from apiary.server.sse import EventStream, make_filter, parse_resume
from apiary.server.state import app_state, live_session
from apiary.storage.base import EventLog

KNOWN_TYPES = DEFAULT_STREAM_TYPES | {
    "execution_resumed", "execution_resurrected", "llm_reasoning_delta", "judge_verdict", "escalation_requested",
    "stream_ttft_exceeded", "stream_inactive", "goal_achieved", "queen_identity_selected", "custom",
    "task_created", "task_updated", "task_deleted", "task_list_reset", "webhook_received", "budget_warning",
    "budget_exhausted", "context_compacted", "colony_fork_marker",
}


def requested_types(request: web.Request) -> frozenset[str]:
    raw = request.query.get("types", "")
    names = {t.strip() for t in raw.split(",") if t.strip()} & KNOWN_TYPES
    return frozenset(names) if names else DEFAULT_STREAM_TYPES


async def stream_events(request: web.Request) -> web.StreamResponse:
    state = app_state(request)
    session = await live_session(request)
    resume = parse_resume(request)
    wanted = make_filter(requested_types(request), hide_worker_noise=session.phase == "independent")
    stream = EventStream(request, state.bus, state.clock, session.id, wanted=wanted, resume=resume,
                         keepalive_s=state.settings.server.keepalive_s)
    return await stream.run()


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


async def tail_page(log: EventLog, session_id: str, limit: int) -> list[StoredEvent]:
    """The last ``limit`` events of the collapsed log, read from the tail in growing windows.

    Collapsing a tail window keeps exactly what collapsing the whole log keeps inside it: the delta kept
    for a key is its newest one, which is in every tail window that holds an older one.
    """
    window = 4 * limit + 16
    while True:
        rows = await log.read_tail(session_id, window)
        kept = collapse_text_deltas(rows)
        if len(kept) >= limit or len(rows) < window:
            return kept[-limit:]
        window *= 4


async def history(request: web.Request) -> web.Response:
    state = app_state(request)
    session_id = request.match_info["session_id"]
    limit = _int_param(request, "limit")
    limit = 2000 if limit is None else max(1, min(limit, 10000))
    log = state.bus.log
    if "after" in request.query:
        after = _int_param(request, "after")
        if after is None:
            raise InvalidRequest("after must be an integer")
        # Collapse the whole suffix, not one page of it: a page cut in the middle of a streamed reply
        # would otherwise keep a delta that the full history collapses away.
        events = collapse_text_deltas(await log.read(session_id, after=after))
        total = len(events)
        events = events[:limit]
    else:
        events = await tail_page(log, session_id, limit)
        # counted up to the page's newest event, so events appended meanwhile are in neither
        total = await log.count_collapsed(session_id, upto=events[-1].id) if events else 0
    body = {"events": [e.event.to_wire(e.id) for e in events], "session_id": session_id, "total": total,
            "returned": len(events), "truncated": total > len(events), "limit": limit}
    return web.json_response(body)


ROUTES = [
    Route("GET", "/api/sessions/{session_id}/events", stream_events, "Server-Sent Events of the session",
          stream=True),
    Route("GET", "/api/sessions/{session_id}/events/history", history, "Stored events, text deltas collapsed"),
]
