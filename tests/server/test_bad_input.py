"""Bad input never changes anything: every answer is a 4xx JSON object with an ``error`` string, and
the sessions, their event logs and the files under APIARY_HOME stay as they were (SPEC A 1.1-1.3)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from apiary.server.state import APP_STATE
from helpers import create_session, wait_for_event

LONG = "x" * 300
INVALID_PARAM = "Invalid path parameter"
PATH_LIKE = ["..", "a..b", "a/b", "a\\b", "../../etc", "a\x00b", "a\nb", LONG, ".", ""]  # in bodies
S = "/api/sessions"
C = "/api/sessions/{sid}"

# (method, path, body, status, error): body is bytes (sent raw) or a JSON value; error None = any text.
CASES: list[tuple[str, str, Any, int, str | None]] = [
    ("POST", S, b"{not json", 400, "Invalid JSON body"),
    ("POST", S, b"\xff\xfe", 400, "Invalid JSON body"),
    ("POST", S, [1, 2], 400, "Request body must be a JSON object"),
    ("POST", S, "just a string", 400, "Request body must be a JSON object"),
    ("POST", S, 42, 400, "Request body must be a JSON object"),
    ("POST", S, {"queen_name": 5}, 400, "queen_name must be a string"),
    ("POST", S, {"initial_prompt": {"a": 1}}, 400, "initial_prompt must be a string"),
    ("POST", S, {"session_id": True}, 400, "session_id must be a string"),
    ("POST", S, {"initial_phase": "nap"}, 400, "Invalid initial_phase 'nap'"),
    ("POST", S, {"queen_name": "queen_nobody"}, 404, "Queen 'queen_nobody' not found"),
    ("POST", S, {"model": "gpt-4"}, 400, None),
    ("POST", S, {"session_id": "{sid}"}, 409, "Session '{sid}' already exists"),
    *[("POST", S, {"session_id": bad}, 400, INVALID_PARAM) for bad in PATH_LIKE],
    *[("POST", S, {"queen_resume_from": bad}, 400, INVALID_PARAM) for bad in PATH_LIKE],
    *[("POST", S, {"queen_name": bad}, 400, INVALID_PARAM) for bad in PATH_LIKE],
    ("POST", C + "/chat", b"{", 400, "Invalid JSON body"),
    ("POST", C + "/chat", [], 400, "Request body must be a JSON object"),
    ("POST", C + "/chat", {}, 400, "message is required"),
    ("POST", C + "/chat", {"message": 1}, 400, "message must be a string"),
    ("POST", C + "/chat", {"message": "x", "images": {}}, 400, "images must be a list"),
    ("POST", C + "/chat", {"message": "x", "images": [{}]}, 400, "images[0] must be an image_url block"),
    ("POST", C + "/chat", {"message": "x", "display_message": []}, 400, "display_message must be a string"),
    ("POST", C + "/queen-context", b"nope", 400, "Invalid JSON body"),
    ("POST", C + "/queen-context", {}, 400, "message is required"),
    ("POST", C + "/queen-context", {"message": 2}, 400, "message must be a string"),
    ("POST", C + "/mark-colony-spawned", b"[", 400, "Invalid JSON body"),
    ("POST", C + "/mark-colony-spawned", {"colony_name": ""}, 400, "colony_name is required"),
    ("POST", C + "/mark-colony-spawned", {"colony_name": ["a"]}, 400, "colony_name must be a string"),
    ("POST", C + "/trigger", {}, 503, "No colony loaded in this session"),
    ("POST", C + "/stop", b"{", 503, "No colony loaded in this session"),
    ("GET", C + "/events", None, 404, None),    # replaced below by a bad Last-Event-ID case
    ("GET", C + "/events/history?after=later", None, 400, "after must be an integer"),
    ("POST", "/api/queen/queen_growth/session", b"{", 400, "Invalid JSON body"),
    ("POST", "/api/queen/queen_growth/session", {"initial_phase": 3}, 400, "initial_phase must be a string"),
    ("POST", "/api/queen/queen_growth/session/new", {"initial_phase": "later"}, 400,
     "Invalid initial_phase 'later'"),
    ("POST", "/api/queen/queen_growth/session/select", {}, 400, "session_id is required"),
    ("POST", "/api/queen/queen_growth/session/select", {"session_id": "{sid}"}, 404, None),
    ("POST", "/api/queen/queen_technology/session/select", {"session_id": "unknown_one"}, 404, None),
    ("POST", "/api/queen/queen_nobody/session", {}, 404, "Queen 'queen_nobody' not found"),
    *[("POST", f"/api/queen/{seg}/session", {}, 400, INVALID_PARAM) for seg in ("a..b", "a%5Cb", "%2F", LONG)],
    *[("DELETE", f"/api/sessions/history/{seg}", None, 400, INVALID_PARAM) for seg in ("a..b", "a%5Cb", LONG)],
    ("DELETE", "/api/sessions/history/unknown_one", None, 404, "Session 'unknown_one' not found"),
    ("POST", "/api/messages/classify", {"message": None}, 400, "message is required"),
    ("POST", "/api/messages/classify", b"{{", 400, "Invalid JSON body"),
    *[(m, f"/api/sessions/{seg}/{route}", {"message": "x"}, 404, None)
      for seg in ("unknown", "a..b", "a%2Fb", "a%5Cb", LONG) for m, route in (("POST", "chat"),
                                                                             ("POST", "cancel-queen"),
                                                                             ("GET", "events"))],
    ("GET", "/api/sessions/unknown", None, 404, "Session 'unknown' not found"),
    ("DELETE", "/api/sessions/unknown", None, 404, "Session 'unknown' not found"),
    ("GET", "/api/nowhere", None, 404, "Not found"),
    ("POST", "/api/nowhere", {}, 404, "Not found"),
    ("PUT", S, {}, 405, "Method not allowed"),
    ("POST", S, {"initial_prompt": "y" * 2000}, 413, "Request body too large"),
    ("POST", C + "/chat", {"message": "z" * 5000}, 413, "Request body too large"),
]
# the events stream: a bad resume point instead of an unknown session
CASES = [c for c in CASES if c[:2] != ("GET", C + "/events")] + [
    ("GET", C + "/events?last_event_id=-3", None, 400, "Last-Event-ID must be a non-negative integer"),
    ("GET", C + "/events?last_event_id=abc", None, 400, "Last-Event-ID must be a non-negative integer"),
]


def _case_id(case: tuple[str, str, Any, int, str | None]) -> str:
    method, path, body, status, _ = case
    shown = body if isinstance(body, bytes) else json.dumps(body)
    return f"{method} {path[:50]} {str(shown)[:30]} -> {status}"


def snapshot_files(home: Path) -> dict[str, str]:
    """Every file under home with a hash of its content (the SQLite files are compared through the API)."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.name.startswith("apiary.db")}


@pytest.fixture(scope="module")
def table_client_settings() -> dict[str, Any]:
    return {"server": {"max_body_bytes": 1000}}


@pytest.fixture
async def small(make_client, table_client_settings):
    api = await make_client(**table_client_settings)
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    return api, sid


async def state_of(api, home: Path, sid: str) -> dict[str, Any]:
    state = api.app[APP_STATE]
    return {
        "live": sorted(state.sessions.live),
        "history": [i["session_id"] for i in (await (await api.get("/api/sessions/history")).json())["sessions"]],
        "events": await state.deps.stores.events.last_id(sid),
        "conversation": (await state.deps.stores.conversations.load(f"queen:{sid}")).messages,
        "files": snapshot_files(home),
    }


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
async def test_bad_input_is_refused_and_changes_nothing(small, home, case):
    api, sid = small
    method, path, body, status, error = case
    path = path.replace("{sid}", sid)
    if isinstance(body, dict):
        body = {k: v.replace("{sid}", sid) if isinstance(v, str) else v for k, v in body.items()}
    before = await state_of(api, home, sid)
    if isinstance(body, bytes):
        resp = await api.request(method, path, data=body)
    elif body is None:
        resp = await api.request(method, path)
    else:
        resp = await api.request(method, path, data=json.dumps(body).encode())
    assert resp.status == status
    assert 400 <= resp.status < 600
    assert resp.content_type == "application/json"
    answer = await resp.json()
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"]
    if error is not None:
        assert answer["error"] == error.replace("{sid}", sid)
    assert resp.headers["Cache-Control"] == "no-store"
    assert await state_of(api, home, sid) == before


def test_every_bad_input_case_is_a_client_error_or_no_colony():
    assert all(400 <= c[3] < 500 or c[4] == "No colony loaded in this session" for c in CASES)
    assert {c[3] for c in CASES} >= {400, 404, 405, 409, 413}
