"""Health, the OpenAPI document, execution routes without a colony, unknown paths, wrong methods,
and the caching header (SPEC A 1.5, 1.7, 2, 3.9, 5)."""

from __future__ import annotations

import pytest

from apiary import __version__
from apiary.server.state import APP_STATE
from helpers import create_session

NO_COLONY = {"error": "No colony loaded in this session"}
EXECUTION_ROUTES = [
    ("POST", "trigger", {}), ("POST", "inject", {"node_id": "worker"}), ("GET", "goal-progress", None),
    ("POST", "resume", {"session_id": "s", "checkpoint_id": "c"}),
    ("POST", "replay", {"session_id": "s", "checkpoint_id": "c"}), ("POST", "pause", None),
    ("POST", "stop", {"execution_id": "x"}),
]


async def test_health(api):
    resp = await api.get("/api/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "sessions": 0, "agents_loaded": 0, "version": __version__}
    await create_session(api)
    await create_session(api)
    body = await (await api.get("/api/health", data=b"ignored {")).json()
    assert (body["sessions"], body["agents_loaded"]) == (2, 0)


async def test_health_reports_unreachable_storage(api):
    stores = api.app[APP_STATE].deps.stores

    async def broken() -> None:
        raise OSError("database is gone")

    stores.ping = broken
    resp = await api.get("/api/health")
    assert resp.status == 503
    assert await resp.json() == {"status": "unavailable", "error": "database is gone", "sessions": 0,
                                 "agents_loaded": 0}


async def test_openapi_equals_the_route_table(api):
    resp = await api.get("/api/openapi.json")
    doc = await resp.json()
    assert resp.status == 200 and doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in api.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method != "HEAD":
            served.add((path, route.method))
    assert documented == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            params = {p["name"] for p in op.get("parameters", [])}
            assert params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}


@pytest.mark.parametrize(("method", "route", "body"), EXECUTION_ROUTES)
async def test_execution_routes_without_a_colony(api, method, route, body):
    sid = (await create_session(api))["session_id"]
    resp = await api.request(method, f"/api/sessions/{sid}/{route}", json=body)
    assert (resp.status, await resp.json()) == (503, NO_COLONY)
    resp = await api.request(method, f"/api/sessions/session_nope/{route}", json=body)
    assert (resp.status, await resp.json()) == (404, {"error": "Session 'session_nope' not found"})


async def test_colony_listing_routes_without_a_colony(api):
    sid = (await create_session(api))["session_id"]
    for route, answer in (("stats", {}), ("entry-points", {"entry_points": []}), ("colonies", {"colonies": []}),
                          ("graphs", {"graphs": []})):
        resp = await api.get(f"/api/sessions/{sid}/{route}")
        assert (resp.status, await resp.json()) == (200, answer), route


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT"])
@pytest.mark.parametrize("path", ["/api/nope", "/api/sessions/s1/worker-input", "/api/queen/x/y/z",
                                  "/api/sessions/s1/events/history/more"])
async def test_unknown_api_path_is_json_404(api, method, path):
    resp = await api.request(method, path, data=b"{}")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert await resp.json() == {"error": "Not found"}
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/sessions", {"GET", "POST"}),
    ("GET", "/api/sessions/{sid}/chat", {"POST"}),
    ("POST", "/api/health", {"GET"}),
    ("PATCH", "/api/sessions/{sid}", {"GET", "DELETE"}),
    ("GET", "/api/queen/queen_growth/session", {"POST"}),
])
async def test_wrong_method_is_json_405_with_allow(api, method, path, allow):
    sid = (await create_session(api))["session_id"]
    resp = await api.request(method, path.format(sid=sid))
    assert resp.status == 405
    assert await resp.json() == {"error": "Method not allowed"}
    assert set(resp.headers["Allow"].split(",")) - {"HEAD"} == allow
    assert resp.headers["Cache-Control"] == "no-store"


async def test_every_api_answer_is_no_store(api):
    sid = (await create_session(api))["session_id"]
    for method, path in [("GET", "/api/health"), ("GET", "/api/sessions"), ("GET", f"/api/sessions/{sid}"),
                         ("GET", "/api/sessions/nope"), ("POST", "/api/sessions/nope/chat"),
                         ("GET", f"/api/sessions/{sid}/events/history"), ("GET", "/api/queen/profiles"),
                         ("POST", f"/api/sessions/{sid}/chat"), ("GET", "/api/openapi.json")]:
        resp = await api.request(method, path)
        assert resp.headers.get("Cache-Control") == "no-store", (method, path, resp.status)


async def test_paths_outside_api_serve_the_ui(api):
    resp = await api.get("/some/client/route")
    assert resp.status == 200
    assert resp.content_type == "text/html"


async def test_api_token_is_required_when_configured(make_client):
    api = await make_client(server={"api_token": "s3cret"})
    for headers in ({}, {"X-Hive-Token": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        for path in ("/api/health", "/api/nope", "/api/sessions"):
            resp = await api.get(path, headers=headers)
            assert (resp.status, await resp.json()) == (401, {"error": "unauthorized"}), (headers, path)
            assert resp.headers["Cache-Control"] == "no-store"
    resp = await api.post("/api/sessions", json={})
    assert resp.status == 401
    assert api.app[APP_STATE].sessions.live == {}
    for headers in ({"X-Hive-Token": "s3cret"}, {"Authorization": "Bearer s3cret"}):
        resp = await api.get("/api/health", headers=headers)
        assert resp.status == 200, headers
    resp = await api.get("/")     # the UI itself is not behind the token
    assert resp.status == 200
