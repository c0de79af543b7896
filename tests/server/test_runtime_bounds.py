"""What the soak found growing or blocking, one test each (docs/reliability.md, section 5):

- a stream whose client went away lived on until its next keepalive write failed (15 s): its task, its
  bus subscription, the session's in-use mark; now it ends within about a second;
- ``SessionManager._locks`` kept a lock for every session id ever asked for (404s included);
- ``meta.json`` was written (with an fsync) on the event loop when a session was opened and ended;
- aiohttp's report of a request its parser refused was an ERROR with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import aiohttp
import pytest
from aiohttp import web

from apiary.core.config import Settings
from apiary.server.app import build_app
from apiary.server.state import APP_STATE
from apiary.sessions.files import StoredSession
from helpers import create_session, wait_for_event


async def until(predicate, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def handler_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if "_handle_request" in repr(t.get_coro())]


@pytest.fixture
async def served(home):
    """The app served like ``server/runner.py`` serves it. aiohttp's TestServer cancels a handler when its
    client disconnects (``handler_cancellation=True``); the real runner does not."""
    app = await build_app(Settings(home=home))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        yield app, http
    await runner.cleanup()


async def test_a_stream_ends_soon_after_its_client_goes_away(served):
    """The keepalive is 15 s (the default); an idle stream must not wait for it to notice."""
    app, http = served
    async with http.post("/api/sessions", json={}) as resp:
        sid = (await resp.json())["session_id"]
    state = app[APP_STATE]
    manager, bus = state.sessions, state.deps.bus
    assert await until(lambda: (loop := manager.live[sid].queen.loop) is not None and not loop.in_turn, 10.0)
    baseline = len(handler_tasks())
    for _ in range(3):
        resp = await http.get(f"/api/sessions/{sid}/events")
        await resp.content.readline()
        assert await until(lambda: bus.subscriber_count(sid) == 1, timeout=2.0)
        await asyncio.sleep(0.5)                     # caught up: the stream waits for events or its keepalive
        resp.close()                                 # the client goes away; nothing more is written to it
        assert await until(lambda: bus.subscriber_count(sid) == 0, timeout=3.0), "the stream outlived its client"
        assert await until(lambda: sid not in manager.parking._in_use, timeout=1.0)
    assert await until(lambda: len(handler_tasks()) <= baseline, timeout=2.0), handler_tasks()


async def test_a_snapshot_stream_ends_soon_after_its_client_goes_away(served):
    _app, http = served
    baseline = len(handler_tasks())
    resp = await http.get("/api/browser/status/stream")
    assert resp.status == 200
    await resp.content.readline()
    assert len(handler_tasks()) == baseline + 1
    resp.close()
    assert await until(lambda: len(handler_tasks()) <= baseline, timeout=3.0), handler_tasks()


async def test_session_locks_do_not_accumulate(api):
    manager = api.app[APP_STATE].sessions
    for n in range(20):
        assert (await api.get(f"/api/sessions/no_such_session_{n}")).status == 404
        assert (await api.post(f"/api/sessions/no_such_session_{n}/chat", json={"message": "hi"})).status == 404
    sids = [(await create_session(api, session_id=f"churn_{n}"))["session_id"] for n in range(5)]
    for sid in sids:
        await api.delete(f"/api/sessions/{sid}")
    await asyncio.sleep(0)
    assert len(manager._locks) == 0, list(manager._locks.keys())


async def test_meta_json_is_written_off_the_event_loop_on_open_and_end(api, monkeypatch):
    writes: list[tuple[str, bool]] = []
    original = StoredSession.merge_meta
    loop_thread = threading.get_ident()

    def spy(self, updates, *, remove=()):
        writes.append((",".join(sorted(updates)), threading.get_ident() == loop_thread))
        return original(self, updates, remove=remove)

    monkeypatch.setattr(StoredSession, "merge_meta", spy)
    sid = (await create_session(api))["session_id"]
    await api.delete(f"/api/sessions/{sid}")
    opened = [on_loop for keys, on_loop in writes if "queen_id" in keys]
    ended = [on_loop for keys, on_loop in writes if keys == "ended_at"]
    assert opened == [False] and ended == [False], writes


async def test_a_request_the_parser_refuses_is_one_warning_line(api, caplog):
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    host, port = api.server.host, api.server.port

    def send_garbage() -> bytes:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"GET /api/health\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(4096)

    answer = await asyncio.to_thread(send_garbage)
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer
    assert await until(lambda: any(r.name == "aiohttp.server" for r in caplog.records), timeout=2.0)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.WARNING, None)], caplog.text
    message = records[0].getMessage()
    assert message.startswith("refused a malformed request from 127.0.0.1: InvalidURLError: 400 Invalid char"), message
    assert "\n" not in message
    assert "Traceback" not in caplog.text
    assert (await api.get("/api/health")).status == 200


async def test_phase_switches_are_written_off_the_loop_in_call_order(api, monkeypatch):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    session = api.app[APP_STATE].sessions.live[sid]
    writes: list[tuple[str, bool]] = []
    original = StoredSession.merge_meta
    loop_thread = threading.get_ident()

    def slow_spy(self, updates, *, remove=()):
        writes.append((str(updates.get("phase")), threading.get_ident() == loop_thread))
        time.sleep(0.05 if updates.get("phase") == "working" else 0.0)   # the first write is the slow one
        return original(self, updates, remove=remove)

    monkeypatch.setattr(StoredSession, "merge_meta", slow_spy)
    changed = await asyncio.gather(session.switch_phase("working"), session.switch_phase("reviewing"),
                                   session.switch_phase("reviewing"))
    assert changed == [True, True, False]
    assert writes == [("working", False), ("reviewing", False)]
    assert session.phase == "reviewing" and session.stored.meta()["phase"] == "reviewing"
    events = await wait_for_event(api, sid, "queen_phase_changed", count=2)
    assert [e["data"]["phase"] for e in events] == ["working", "reviewing"]


def test_concurrent_merges_of_one_file_lose_no_key(tmp_path):
    """``merge_json`` runs in threads (``to_thread``) beside other merges of the same ``meta.json``."""
    from apiary.core.jsonfile import merge_json, read_json

    path = tmp_path / "meta.json"
    start = threading.Barrier(6)

    def merges(n: int) -> None:
        start.wait()
        for i in range(25):
            merge_json(path, {f"k{n}_{i}": i})

    threads = [threading.Thread(target=merges, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_json(path)) == 6 * 25


async def test_the_lag_histogram_counts_a_blocked_loop(api):
    from soaking import percentile

    first = (await (await api.get("/api/debug/runtime")).json())["loop_lag_histogram"]
    await asyncio.sleep(0.15)
    time.sleep(0.3)    # block the loop the server shares with the test on purpose
    await asyncio.sleep(0.25)
    second = (await (await api.get("/api/debug/runtime")).json())["loop_lag_histogram"]
    bounds = second["bounds_ms"]
    counts = [b - a for a, b in zip(first["counts"], second["counts"], strict=True)]
    assert sum(counts) >= 3 and all(c >= 0 for c in counts)
    assert sum(c for b, c in zip([*bounds, 10**9], counts, strict=True) if b >= 200) >= 1
    assert percentile(bounds, counts, 1.0) >= 200
    assert percentile(bounds, [0] * len(counts), 0.5) is None


async def test_a_live_queen_keeps_no_copy_of_her_recordings(api):
    """Found by the soak (RSS +43 MiB in 10 minutes): a live run kept every model response and tool result
    it recorded in ``RunContext.recorded`` for the life of the session, although only a resumed run reads
    that map. The recordings still go to the store."""
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    after = 0
    for message in ["hello", "demo:tool list_directory {}", "hello again"]:
        resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": message})
        after = (await resp.json())["after_seq"]
        await wait_for_event(api, sid, "client_input_requested", after=after)
    session = api.app[APP_STATE].sessions.live[sid]
    ctx = session.queen.loop.ctx
    assert ctx.replay == "live"
    assert ctx.recorded == {}
    stored = await api.app[APP_STATE].deps.stores.recordings.get_run(f"queen:{sid}", ctx.run_id)
    assert len(stored) >= 4 and any(key.startswith("tool:") for _, key in stored)
