"""Helpers for the colony and execution-control tests (imported as ``from colony_helpers import ...``).

A colony is written by hand under ``<home>/colonies/<name>/`` (SPEC B 6.5) and opened with
``POST /api/sessions {"agent_path": ...}``. Workers run on a model chosen per test through
``make_client(llm_factory=...)``: ``worker_llm_factory`` gives the queen the demo model and the
worker (model spec ``"worker"``, via the ``worker_model`` setting) whatever the test passes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from apiary.llm.base import LLMProvider, ModelRequest, ModelResponse, StreamEvent, TextDelta
from apiary.llm.demo import DemoLLM
from helpers import (
    create_session,
    wait_until,
)

FAST = {"cancel_grace_s": 0.5, "resurrect_delay_s": 0.05, "heartbeat_s": 0.2}
FAST_LLM = {"retry_base_s": 0.01, "retry_max_s": 0.02}
WORKER_MODEL = "worker"


def write_colony(home: Path, name: str = "c1", *, goal: str = "Write the report", criteria: list[Any] | None = None,
                 tools: list[str] | None = None, loop_config: dict[str, Any] | None = None,
                 tasks: list[dict[str, Any]] | None = None, system_prompt: str = "You are a test worker.",
                 extra: dict[str, Any] | None = None) -> Path:
    """A colony folder with ``worker.json`` and, when ``tasks`` is given, a seeded ``progress.db``."""
    colony = home / "colonies" / name
    colony.mkdir(parents=True, exist_ok=True)
    spec = {"system_prompt": system_prompt,
            "goal": {"description": goal, "success_criteria": criteria or []},
            "tools": tools if tools is not None else [],
            "loop_config": loop_config or {"max_iterations": 20}, **(extra or {})}
    (colony / "worker.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    if tasks:
        from apiary.storage.sqlite.progress_db import ensure_progress_db
        from apiary.storage.sqlite.progress_seed import seed_tasks

        db = ensure_progress_db(colony)
        conn = sqlite3.connect(db)
        try:
            seed_tasks(conn, tasks, "queen_create")
        finally:
            conn.close()
    return colony


def worker_llm_factory(worker: LLMProvider) -> Callable[[str], LLMProvider]:
    """A model factory: the demo model for queens, ``worker`` for the colony's workers."""

    def factory(spec: str) -> LLMProvider:
        return worker if spec == WORKER_MODEL else DemoLLM()

    return factory


async def fast_client(make_client: Callable[..., Any], worker: LLMProvider | None = None,
                      **overrides: Any) -> TestClient:
    colonies = {**FAST, **overrides.pop("colonies", {})}
    kwargs: dict[str, Any] = {"colonies": colonies, "llm": {**FAST_LLM, **overrides.pop("llm", {})}, **overrides}
    if worker is not None:
        kwargs["worker_model"] = WORKER_MODEL
        kwargs["llm_factory"] = worker_llm_factory(worker)
    return await make_client(**kwargs)


async def open_colony(client: TestClient, colony: Path, **body: Any) -> dict[str, Any]:
    return await create_session(client, agent_path=str(colony), **body)


async def history(client: TestClient, sid: str, *, after: int = 0) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/sessions/{sid}/events/history", params={"after": str(after), "limit": "10000"})
    assert resp.status == 200
    return (await resp.json())["events"]




async def wait_events(client: TestClient, sid: str, pred: Callable[[dict[str, Any]], bool], *, after: int = 0,
                      count: int = 1, timeout: float = 10.0, what: str = "events") -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        events = [e for e in await history(client, sid, after=after) if pred(e)]
        return events if len(events) >= count else None

    return await wait_until(found, timeout=timeout, what=what)


def of_type(*types: str, execution_id: str | None = None, stream_id: str | None = None
            ) -> Callable[[dict[str, Any]], bool]:
    def pred(event: dict[str, Any]) -> bool:
        return (event["type"] in types and (execution_id is None or event.get("execution_id") == execution_id)
                and (stream_id is None or event.get("stream_id") == stream_id))

    return pred


async def trigger(client: TestClient, sid: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/trigger", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def worker_dir(home: Path, colony: str, worker_session_id: str) -> Path:
    return home / "agents" / colony / "sessions" / worker_session_id


def read_state(home: Path, colony: str, worker_session_id: str) -> dict[str, Any]:
    return json.loads((worker_dir(home, colony, worker_session_id) / "state.json").read_text(encoding="utf-8"))


def tasks_of(colony: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(colony / "data" / "progress.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM tasks ORDER BY seq, created_at")]
    finally:
        conn.close()


def task_events(colony: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(colony / "data" / "progress.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM apiary_task_events ORDER BY rowid")]
    finally:
        conn.close()


class ControlledLLM:
    """A worker model the test steers: it answers like ``base`` (the demo model by default), except

    - call ``n`` for which ``hold(n, request)`` is true streams ``hold_text`` and then waits for
      ``release``; with ``stubborn`` it ignores a cancel until ``release`` is set (a model stream
      that outlives the cancel grace period);
    - call ``n`` for which ``error(n, request)`` returns an exception raises it.

    ``requests`` lists every request (held and failed ones too); ``holding`` is set while a call waits.
    """

    supports_images = True

    def __init__(self, base: LLMProvider | None = None, *, hold: Callable[[int, ModelRequest], bool] | None = None,
                 stubborn: bool = False, error: Callable[[int, ModelRequest], Exception | None] | None = None,
                 hold_text: str = "Holding") -> None:
        self.base = base or DemoLLM()
        self.model = "controlled"
        self.hold, self.stubborn, self.error, self.hold_text = hold, stubborn, error, hold_text
        self.requests: list[ModelRequest] = []
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        n = len(self.requests)
        self.requests.append(request)
        if self.error is not None and (exc := self.error(n, request)) is not None:
            raise exc
        if self.hold is not None and self.hold(n, request):
            if self.hold_text:
                yield TextDelta(self.hold_text)
            self.holding.set()
            try:
                await asyncio.wait_for(self.release.wait(), 30)
            except asyncio.CancelledError:
                self.cancelled += 1
                while self.stubborn and not self.release.is_set():   # every further cancel is ignored too
                    try:
                        await asyncio.wait_for(self.release.wait(), 30)
                    except asyncio.CancelledError:
                        self.cancelled += 1
                raise
            finally:
                self.holding.clear()
        async for event in self.base.stream(request):
            yield event

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        return await self.base.acomplete(request)

    async def aclose(self) -> None:
        return None


def texts(request: ModelRequest) -> list[str]:
    return [str(m.get("content", "")) for m in request.messages]


def two_step_worker() -> LLMProvider:
    """A worker model whose run takes two iterations: a plan (text only), then set_output and a close."""
    from apiary.llm.fake import FunctionLLM, Turn

    def respond(request: ModelRequest) -> Turn:
        called = [c["function"]["name"] for m in request.messages for c in m.get("tool_calls") or []]
        if "set_output" in called:
            return Turn(text="All done.")
        planned = any(m["role"] == "assistant" and m["content"] == "Planning the work." for m in request.messages)
        if not planned:
            return Turn(text="Planning the work.")
        return Turn(text="Recording the result.", tool_calls=[("set_output", {"key": "result", "value": "ok"})])

    return FunctionLLM(respond, model="two-step")


def tool_worker(command: str) -> LLMProvider:
    """A worker model that runs ``command`` with run_command, then sets its output and closes."""
    from apiary.llm.fake import FunctionLLM, Turn

    def respond(request: ModelRequest) -> Turn:
        called = [c["function"]["name"] for m in request.messages for c in m.get("tool_calls") or []]
        if "set_output" in called:
            return Turn(text="All done.")
        if "run_command" not in called:
            return Turn(text="Running it.", tool_calls=[("run_command", {"command": command})])
        if request.messages[-1]["role"] == "tool":
            return Turn(text="The command ran.")
        return Turn(text="Recording the result.", tool_calls=[("set_output", {"key": "result", "value": "ran"})])

    return FunctionLLM(respond, model="tool-worker")


async def raw_events(client: TestClient, sid: str) -> list[dict[str, Any]]:
    """Every stored event of the session, text deltas not collapsed (straight from the log)."""
    from apiary.server.state import APP_STATE

    stores = client.server.app[APP_STATE].deps.stores
    return [json.loads(s.json_text) for s in await stores.events.read(sid)]


async def checkpoints(client: TestClient, sid: str, worker_session_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/sessions/{sid}/worker-sessions/{worker_session_id}/checkpoints")
    assert resp.status == 200, await resp.text()
    return await resp.json()


def active_ids(client: TestClient, sid: str) -> list[str]:
    from apiary.server.state import APP_STATE

    session = client.server.app[APP_STATE].sessions.loaded(sid)
    return list(session.colony.active()) if session and session.colony else []


async def seed_pg_tasks(pg_url: str, colony: str, goals: list[str]) -> list[str]:
    """Tasks straight into a colony's shared queue on PostgreSQL; their ids in order."""
    from apiary.storage.postgres.database import PgDatabase
    from apiary.storage.postgres.tasks import PgTaskQueue

    db = await PgDatabase.open(pg_url)
    try:
        return await PgTaskQueue(db, colony).enqueue([{"goal": g} for g in goals], "queen_create")
    finally:
        await db.close()
