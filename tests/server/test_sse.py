"""The session event stream (SPEC A 4): resume points, gap frames, filters, keepalive, slow clients."""

from __future__ import annotations

import asyncio
import json

from apiary.core.events import DEFAULT_STREAM_TYPES, REPLAY_TYPES, Event
from apiary.server.state import APP_STATE
from helpers import create_session, read_sse, wait_for_event


async def parked(api) -> str:
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    return sid


async def log_of(api, sid: str):
    return await api.app[APP_STATE].deps.stores.events.read(sid)


async def chat_and_wait(api, sid: str, text: str) -> int:
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": text})
    after = (await resp.json())["after_seq"]
    parked_at = await wait_for_event(api, sid, "client_input_requested", after=after)
    return parked_at[0]["id"]


async def publish(api, sid: str, type_: str, **fields) -> int:
    bus = api.app[APP_STATE].deps.bus
    return (await bus.publish(sid, Event(type=type_, **fields))).id


async def read_lines(resp, until, timeout: float = 10.0) -> list[str]:
    lines: list[str] = []

    async def reader() -> None:
        async for raw in resp.content:
            lines.append(raw.decode().rstrip("\n"))
            if until(lines):
                return

    await asyncio.wait_for(reader(), timeout)
    return lines


async def test_last_event_id_resume_gets_exactly_the_missed_events(api):
    sid = await parked(api)
    await chat_and_wait(api, sid, "first message")
    newest = await chat_and_wait(api, sid, "second message")
    resume_at = newest // 2
    resp = await api.get(f"/api/sessions/{sid}/events", headers={"Last-Event-ID": str(resume_at)})
    assert resp.status == 200
    reading = asyncio.create_task(read_sse(resp, until=lambda f: f.get("type") == "client_input_requested"
                                           and f["id"] > newest + 1))
    await asyncio.sleep(0)
    await api.post(f"/api/sessions/{sid}/chat", json={"message": "third, while streaming"})
    frames = await reading
    resp.close()
    got = [f["_id"] for f in frames]
    expected = [s.id for s in await log_of(api, sid) if s.type in DEFAULT_STREAM_TYPES and s.id > resume_at]
    assert got == expected[: len(got)]
    assert got[-1] > newest                       # live events followed the log read
    assert len(got) == len(set(got))              # no duplicate
    assert all(f["id"] == f["_id"] for f in frames)
    assert all(f["type"] in DEFAULT_STREAM_TYPES for f in frames)


async def test_last_event_id_query_parameter_and_header_precedence(api):
    sid = await parked(api)
    events = await log_of(api, sid)
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": "2"})
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    assert [f["_id"] for f in frames] == [s.id for s in events if s.id > 2 and s.type in DEFAULT_STREAM_TYPES]
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": "0"},
                         headers={"Last-Event-ID": str(events[-1].id - 1)})
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    assert [f["_id"] for f in frames] == [events[-1].id]


async def test_bad_resume_point_is_400(api):
    sid = await parked(api)
    for value in ("abc", "-1", "1.5", "1e3"):
        resp = await api.get(f"/api/sessions/{sid}/events", headers={"Last-Event-ID": value})
        assert resp.status == 400, value
        assert await resp.json() == {"error": "Last-Event-ID must be a non-negative integer"}
        resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": value})
        assert resp.status == 400, value


async def test_unknown_session_stream_is_json_404(api):
    resp = await api.get("/api/sessions/session_nope/events")
    assert (resp.status, await resp.json()) == (404, {"error": "Session 'session_nope' not found"})


async def test_resume_point_above_newest_gets_a_gap_frame_then_live(api):
    sid = await parked(api)
    newest = (await log_of(api, sid))[-1].id
    resp = await api.get(f"/api/sessions/{sid}/events", headers={"Last-Event-ID": str(newest + 50)})
    reading = asyncio.create_task(read_lines(resp, until=lambda lines: any('"llm_turn_complete"' in ln
                                                                          for ln in lines)))
    await asyncio.sleep(0)
    await api.post(f"/api/sessions/{sid}/chat", json={"message": "after the gap"})
    lines = await reading
    resp.close()
    assert lines[:2] == ["retry: 3000", ""]
    gap = json.loads(lines[2].removeprefix("data: "))
    assert lines[2].startswith("data: ") and lines[3] == ""      # no id: line before it
    assert "id" not in gap
    assert gap["type"] == "gap"
    assert gap["data"] == {"last_id": newest + 50, "next_id": newest + 1, "reason": "unknown_last_event_id"}
    ids = [int(ln[4:]) for ln in lines if ln.startswith("id: ")]
    assert ids and min(ids) > newest


async def test_stream_opens_with_retry_and_never_sends_event_lines(api):
    sid = await parked(api)
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": "0"})
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    lines = await read_lines(resp, until=lambda ls: any('"client_input_requested"' in ln for ln in ls))
    resp.close()
    assert lines[:2] == ["retry: 3000", ""]
    assert not any(ln.startswith("event:") for ln in lines)
    data_lines = [ln for ln in lines if ln.startswith("data: ")]
    id_lines = [ln for ln in lines if ln.startswith("id: ")]
    assert len(data_lines) == len(id_lines)
    for i, line in enumerate(lines[:-2]):     # every frame is "id:" then one "data:" line then a blank
        if line.startswith("id: "):
            assert lines[i + 1].startswith("data: ") and lines[i + 2] == ""


async def test_without_resume_point_only_replay_types_are_replayed(api):
    sid = await parked(api)
    await chat_and_wait(api, sid, "something to replay")
    resp = await api.get(f"/api/sessions/{sid}/events")
    reading = asyncio.create_task(read_sse(resp, until=lambda f: f.get("type") == "node_internal_output"))
    await asyncio.sleep(0)
    marker = await publish(api, sid, "node_internal_output", stream_id="queen", data={"marker": True})
    frames = await reading
    resp.close()
    assert frames[-1]["_id"] == marker
    replayed = [f["_id"] for f in frames[:-1]]
    expected = [s.id for s in await log_of(api, sid) if s.type in REPLAY_TYPES and s.id < marker]
    assert replayed == expected
    assert "node_loop_iteration" not in [f["type"] for f in frames]


async def test_types_filter(api):
    sid = await parked(api)
    resp = await api.get(f"/api/sessions/{sid}/events",
                         params={"types": "client_input_received,llm_turn_complete,not_a_type", "last_event_id": "0"})
    seen: list[str] = []

    def done(frame) -> bool:
        seen.append(frame["type"])
        return "client_input_received" in seen and frame["type"] == "llm_turn_complete"

    reading = asyncio.create_task(read_sse(resp, until=done))
    await asyncio.sleep(0)
    await api.post(f"/api/sessions/{sid}/chat", json={"message": "filtered"})
    frames = await reading
    resp.close()
    assert {f["type"] for f in frames} == {"client_input_received", "llm_turn_complete"}
    expected = [s.id for s in await log_of(api, sid)
                if s.type in ("client_input_received", "llm_turn_complete")][: len(frames)]
    assert [f["_id"] for f in frames] == expected


async def test_unknown_types_only_means_the_default_set(api):
    sid = await parked(api)
    resp = await api.get(f"/api/sessions/{sid}/events", params={"types": "bogus,,", "last_event_id": "0"})
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    expected = [s.id for s in await log_of(api, sid) if s.type in DEFAULT_STREAM_TYPES]
    assert [f["_id"] for f in frames] == expected


async def test_worker_noise_is_hidden_in_the_independent_phase(api):
    sid = await parked(api)
    newest = (await log_of(api, sid))[-1].id
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": str(newest)})
    reading = asyncio.create_task(read_sse(resp, until=lambda f: f.get("type") == "node_internal_output"))
    await asyncio.sleep(0)
    await publish(api, sid, "llm_text_delta", stream_id="worker:w1", data={"content": "x"})
    kept = await publish(api, sid, "execution_completed", stream_id="worker:w1", data={"output": {}})
    default = await publish(api, sid, "llm_text_delta", stream_id="default", data={"content": "y"})
    end = await publish(api, sid, "node_internal_output", stream_id="queen")
    frames = await reading
    resp.close()
    assert [f["_id"] for f in frames] == [kept, default, end]


async def test_keepalive_comment_when_idle(make_client):
    api = await make_client(server={"keepalive_s": 0.2})
    sid = await parked(api)
    newest = (await log_of(api, sid))[-1].id
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": str(newest)})
    lines = await read_lines(resp, until=lambda ls: ls.count(": keepalive") >= 2)
    resp.close()
    assert lines[:2] == ["retry: 3000", ""]
    assert not any(ln.startswith("data:") for ln in lines)
    assert lines[lines.index(": keepalive") + 1] == ""


async def test_keepalive_also_while_only_filtered_events_arrive(make_client):
    api = await make_client(server={"keepalive_s": 0.2})
    sid = await parked(api)
    newest = (await log_of(api, sid))[-1].id
    resp = await api.get(f"/api/sessions/{sid}/events",
                         params={"last_event_id": str(newest), "types": "client_input_received"})
    reading = asyncio.create_task(read_lines(resp, until=lambda ls: ": keepalive" in ls))
    published = 0
    while not reading.done() and published < 200:     # a steady trickle the stream does not send
        await publish(api, sid, "node_internal_output", stream_id="queen")
        published += 1
        await asyncio.sleep(0.02)
    lines = await reading
    resp.close()
    assert ": keepalive" in lines
    assert not any(ln.startswith("data:") for ln in lines)


async def test_slow_consumer_gets_a_gap_frame_and_can_resume_from_it(make_client):
    api = await make_client(server={"sse_queue_size": 5})
    sid = await parked(api)
    newest = (await log_of(api, sid))[-1].id
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": str(newest)})
    await read_lines(resp, until=lambda ls: ls[-2:] == ["retry: 3000", ""])
    bus = api.app[APP_STATE].deps.bus
    burst = await bus.publish_many(sid, [Event(type="node_internal_output", stream_id="queen", data={"n": n})
                                         for n in range(40)])     # arrives faster than it can be sent
    frames = await read_sse(resp, until=lambda f: f.get("type") == "gap")
    rest = await resp.content.read()               # the response ends after the gap frame
    resp.close()
    gap = frames[-1]
    delivered = [f["_id"] for f in frames[:-1]]
    assert "_id" not in gap and "id" not in gap
    assert gap["data"] == {"last_id": delivered[-1] if delivered else newest, "next_id": None,
                           "reason": "slow_consumer"}
    assert delivered == [s.id for s in burst][: len(delivered)]
    assert len(delivered) <= 5
    assert b"data:" not in rest
    # reconnecting from the gap's last_id gets exactly the rest
    again = await api.get(f"/api/sessions/{sid}/events", headers={"Last-Event-ID": str(gap["data"]["last_id"])})
    more = await read_sse(again, until=lambda f: f.get("_id") == burst[-1].id)
    again.close()
    assert delivered + [f["_id"] for f in more] == [s.id for s in burst]


async def test_stream_ends_when_the_session_is_deleted(api):
    sid = await parked(api)
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": "0"})
    await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    await api.delete(f"/api/sessions/{sid}")
    rest = await asyncio.wait_for(resp.content.read(), 10)
    assert b"data:" not in rest
    assert resp.content.at_eof()


async def test_event_published_while_the_stream_opens_is_sent_once(api):
    """An event appended between the stream's subscribe and its log read must not come twice."""
    sid = await parked(api)
    bus = api.app[APP_STATE].deps.bus
    log = bus.log
    original = log.last_id
    raced: list[int] = []

    async def last_id_then_publish(session_id: str) -> int:
        newest = await original(session_id)
        if not raced:      # once, right after the stream learned the newest id
            stored = await bus.publish(session_id, Event(type="client_output_delta", stream_id="queen",
                                                         data={"content": "race", "snapshot": "race"}))
            raced.append(stored.id)
        return newest

    log.last_id = last_id_then_publish
    try:
        for round_, headers in enumerate(({}, {"Last-Event-ID": "1"})):
            raced.clear()
            resp = await api.get(f"/api/sessions/{sid}/events", headers=headers)
            reading = asyncio.create_task(read_sse(resp, until=lambda f, r=round_: f.get("data", {}).get("end") == r))
            while not raced:      # the stream has subscribed and read the newest id
                await asyncio.sleep(0.005)
            end = await publish(api, sid, "node_internal_output", stream_id="queen", data={"end": round_})
            frames = await reading
            resp.close()
            ids = [f["_id"] for f in frames]
            assert ids.count(raced[0]) == 1, headers
            assert ids == sorted(set(ids)) and ids[-1] == end
    finally:
        log.last_id = original
