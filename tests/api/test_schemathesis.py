"""Schemathesis against a real ``apiary serve`` process and its own ``/api/openapi.json``.

Every documented operation gets a small, seeded batch of generated requests (valid and invalid
bodies, queries and path values). Checks: no 5xx anywhere; every 4xx is a JSON object with an
``error`` string; the status code and content type are the documented ones; the body matches the
documented schema. Path parameters are sometimes swapped for ids that exist (a live queen session,
a live colony session, a real colony, a real queen) so the generated bodies reach the handlers'
validation instead of stopping at a 404.

The four SSE routes stream until the client leaves, so they are left out here and read briefly in
``test_sse_routes_answer_then_can_be_left``.

The schema is loaded lazily through a fixture: importing this module needs no server.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apiary.server.routes import ALL_ROUTES
from serve_proc import ServeProc

SSE_PATHS = r"/(events|progress/stream|workers/stream|browser/status/stream)$"
# per operation (about 70 operations: about 1200 requests, 30 s); APIARY_FUZZ_EXAMPLES=200 for a longer run
MAX_EXAMPLES = int(os.environ.get("APIARY_FUZZ_EXAMPLES", "25"))
STATS: dict[int, int] = {}   # status -> count, printed at the end of the module (pytest -s)


class Live:
    """What exists on the server the fuzzer talks to."""

    def __init__(self, proc: ServeProc) -> None:
        self.proc = proc
        self.url = proc.url
        self.queen_session = ""
        self.colony_session = ""
        self.colony = "fuzzcolony"
        self.queen = "queen_technology"
        self.checkpoint = ""
        self.worker_session = ""


def _setup(proc: ServeProc) -> Live:
    live = Live(proc)
    with httpx.Client(base_url=proc.url, timeout=15) as c:
        live.queen_session = c.post("/api/sessions", json={}).json()["session_id"]
        spawn = c.post(f"/api/sessions/{live.queen_session}/colony-spawn",
                       json={"colony_name": live.colony, "tasks": [{"goal": "first"}, {"goal": "second"}]})
        assert spawn.status_code == 200, spawn.text
        opened = c.post("/api/sessions", json={"agent_path": spawn.json()["colony_path"]})
        assert opened.status_code == 201, opened.text
        live.colony_session = opened.json()["session_id"]
        c.post(f"/api/sessions/{live.colony_session}/trigger", json={})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ws = c.get(f"/api/sessions/{live.colony_session}/worker-sessions").json().get("worker_sessions") or []
            if ws and ws[0].get("latest_checkpoint_id"):
                live.worker_session = ws[0].get("session_id", live.colony_session)
                live.checkpoint = ws[0]["latest_checkpoint_id"]
                break
            time.sleep(0.1)
    return live


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("schemathesis")
    proc = ServeProc(home=base / "home", logs=base)
    proc.start()
    try:
        yield _setup(proc)
    finally:
        print(f"\nschemathesis: {sum(STATS.values())} requests, by status {dict(sorted(STATS.items()))}")
        proc.stop()
        proc.cleanup()


@pytest.fixture(scope="module")
def api_schema(live_server: Live) -> Any:
    schema = schemathesis.openapi.from_url(live_server.url + "/api/openapi.json")
    schema.config.update(base_url=live_server.url)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    real = {"session_id": [live_server.queen_session, live_server.colony_session],
            "colony_name": [live_server.colony], "queen_id": [live_server.queen],
            "worker_session_id": [live_server.worker_session or live_server.colony_session]}

    @schema.hook
    def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any]) -> Any:
        swaps = [st.just(path_parameters)]
        if ctx.operation is not None and ctx.operation.method.upper() == "DELETE":
            return swaps[0]     # ending or unloading the shared sessions would turn the rest into 404s
        for name, values in real.items():
            if name in (path_parameters or {}):
                swaps.append(st.sampled_from(values).map(lambda v, n=name: {**path_parameters, n: v}))
        return st.one_of(*swaps)

    return schema


# 503 is the documented answer when what a route needs is not running (SPEC A 1.2): these texts only.
DOCUMENTED_503 = {"No colony loaded in this session", "Queen is not running in this session.", "Queen not available"}


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except the documented 503s (a session without a colony, a queen that is not running)."""
    if response.status_code >= 500:
        text = response.content.decode(errors="replace")[:500]
        error = None
        try:
            error = json.loads(response.content).get("error")
        except (ValueError, AttributeError):
            pass
        assert response.status_code == 503 and error in DOCUMENTED_503, f"{response.status_code}: {text}"
    return None


def error_body_is_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is a JSON object with an ``error`` string (SPEC A 1.2)."""
    if 400 <= response.status_code < 500:
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/json"), f"{response.status_code} with content type {ctype!r}"
        body = json.loads(response.content)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"no error string: {body!r}"
    return None


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          error_body_is_json]
# The operations come from the same route table that builds the server's OpenAPI document, so the
# test ids exist at collection time without a server; the schema itself is read from the server.
OPERATIONS = sorted({(r.method, r.path) for r in ALL_ROUTES if not re.search(SSE_PATHS, r.path)},
                    key=lambda mp: (mp[1], mp[0]))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api(api_schema: Any, live_server: Live, method: str, path: str) -> None:
    operation = api_schema[path][method.upper()]
    strategy = st.one_of(*(operation.as_strategy(mode, hooks=api_schema.hooks)
                           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS, timeout=20)
        STATS[response.status_code] = STATS.get(response.status_code, 0) + 1

    logged_before = len(live_server.proc.stderr())
    try:
        run()
    except Exception as exc:
        # the server's traceback of a 500 is in its log only (SPEC A 1.2): show it with the failure
        log = live_server.proc.stderr()[logged_before:]
        raise AssertionError(f"{exc}\n--- server log during this operation ---\n{log[-6000:]}") from exc


# -- the SSE routes, read briefly ------------------------------------------------------------------


def test_sse_routes_answer_then_can_be_left(live_server: Live) -> None:
    """Each stream answers 200 text/event-stream and sends a first frame; unknown ids get 4xx JSON."""
    with httpx.Client(base_url=live_server.url, timeout=httpx.Timeout(5.0)) as c:
        # fresh sessions: the fuzzer may have locked or stopped the shared ones
        queen = c.post("/api/sessions", json={}).json()["session_id"]
        spawn = c.post(f"/api/sessions/{queen}/colony-spawn", json={"colony_name": "ssecolony", "tasks": []})
        assert spawn.status_code == 200, spawn.text
        opened = c.post("/api/sessions", json={"agent_path": spawn.json()["colony_path"]})
        assert opened.status_code == 201, opened.text
        sid = opened.json()["session_id"]
        streams = [f"/api/sessions/{queen}/events", f"/api/sessions/{sid}/events",
                   f"/api/sessions/{sid}/workers/stream", "/api/colonies/ssecolony/progress/stream",
                   "/api/browser/status/stream"]
        for path in streams:
            with c.stream("GET", path, headers={"Last-Event-ID": "0"}) as resp:
                assert resp.status_code == 200, path
                assert resp.headers["content-type"].startswith("text/event-stream"), path
                first = next(resp.iter_bytes())
                assert first, path
        bad = ["/api/sessions/nope/events", "/api/sessions/a..b/workers/stream", "/api/colonies/NOPE/progress/stream",
               "/api/colonies/a..b/progress/stream", "/api/colonies/none_here/progress/stream",
               "/api/sessions/%2e%2e/events"]
        for path in bad:
            resp = c.get(path)
            assert 400 <= resp.status_code < 500, (path, resp.status_code)
            assert isinstance(resp.json()["error"], str)
        with c.stream("GET", f"/api/sessions/{sid}/events", headers={"Last-Event-ID": "later"}) as resp:
            assert resp.status_code in (200, 400), resp.status_code
            if resp.status_code == 400:
                resp.read()
                assert isinstance(resp.json()["error"], str)
        # the server is still fine after clients walked away mid-stream
        assert c.get("/api/health").json()["status"] == "ok"


def test_openapi_document_lists_every_route(live_server: Live) -> None:
    doc = httpx.get(live_server.url + "/api/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    assert len(doc["paths"]) > 40
