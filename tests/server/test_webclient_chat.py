"""What a web client relies on in chat (SPEC C.2): an initial prompt answered at once with no greeting,
a late stream that still shows the current turn, and ``client_input_requested`` after every turn that
ends waiting for the user."""

from __future__ import annotations

import itertools

from helpers import read_sse, wait_for_event
from webclient_helpers import state

QUEEN = "queen_legal"


async def new_session(api, prompt: str) -> str:
    resp = await api.post(f"/api/queen/{QUEEN}/session/new", json={"initial_prompt": prompt})
    assert resp.status == 200
    return (await resp.json())["session_id"]


async def history(api, sid: str, after: int = 0) -> list[dict]:
    resp = await api.get(f"/api/sessions/{sid}/events/history", params={"after": str(after), "limit": "10000"})
    return (await resp.json())["events"]


async def test_initial_prompt_is_the_first_message_answered_without_a_greeting(api):
    sid = await new_session(api, "check the NDA")
    await wait_for_event(api, sid, "client_input_requested")
    events = await history(api, sid)
    types = [e["type"] for e in events]
    first_wait = types.index("client_input_requested")
    assert types.index("client_input_received") < types.index("client_output_delta") < first_wait
    assert events[types.index("client_input_received")]["data"]["content"] == "check the NDA"
    assert types[:first_wait].count("llm_turn_complete") == 1
    replies = [e["data"]["snapshot"] for e in events[:first_wait] if e["type"] == "client_output_delta"]
    assert "check the NDA" in replies[-1] and not any("Hello!" in r for r in replies)
    conv = await state(api).deps.stores.conversations.load(f"queen:{sid}")
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[0]["content"].endswith("check the NDA")


async def test_a_stream_opened_after_the_turn_shows_it_and_that_the_queen_waits(api):
    sid = await new_session(api, "draft a privacy notice")
    await wait_for_event(api, sid, "client_input_requested")
    resp = await api.get(f"/api/sessions/{sid}/events")
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    types = [f["type"] for f in frames]
    assert types[0] == "client_input_received" and frames[0]["data"]["content"] == "draft a privacy notice"
    assert "client_output_delta" in types and types[-1] == "client_input_requested"
    assert "draft a privacy notice" in [f for f in frames if f["type"] == "client_output_delta"][-1]["data"]["snapshot"]


async def test_a_stream_opened_mid_turn_gets_the_turn_so_far_and_the_rest(api):
    sid = await new_session(api, "demo:delay 40\nplease summarise the contract terms for me")
    await wait_for_event(api, sid, "client_output_delta")
    resp = await api.get(f"/api/sessions/{sid}/events")
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    ids = [f["_id"] for f in frames]
    assert ids == sorted(set(ids))                       # no duplicate, in order
    assert frames[0]["type"] == "client_input_received"
    deltas = [f["data"]["snapshot"] for f in frames if f["type"] == "client_output_delta"]
    assert len(deltas) > 1 and all(b.startswith(a) for a, b in itertools.pairwise(deltas))
    assert "summarise the contract terms" in deltas[-1]
    assert frames[-1]["type"] == "client_input_requested"


async def chat_until_waiting(api, sid: str, message: str) -> list[dict]:
    """Send ``message``; the events up to the queen's next ``client_input_requested``."""
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": message})
    after = (await resp.json())["after_seq"]
    [waiting] = await wait_for_event(api, sid, "client_input_requested", after=after)
    return [e for e in await history(api, sid, after) if e["id"] <= waiting["id"]]


async def test_every_turn_that_ends_waiting_publishes_client_input_requested(api):
    sid = await new_session(api, "hello")
    await wait_for_event(api, sid, "client_input_requested")
    for message in ("what is a DPA?", "demo:tool list_directory {}", "Yes"):
        if message == "Yes":   # a question asked inside a turn waits there, with the question
            asked = await chat_until_waiting(api, sid, "demo:ask Shall I go on?")
            assert asked[-1]["data"]["questions"][0]["prompt"] == "Shall I go on?"
        types = [e["type"] for e in await chat_until_waiting(api, sid, message)]
        assert "llm_turn_complete" in types and types[-1] == "client_input_requested", message
        assert types.count("client_input_requested") == 1
