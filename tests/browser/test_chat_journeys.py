"""Chat journeys in a real browser: create, stream, tools, questions, images, stop, reload, restart."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from uihelpers import ApiaryServer, ConsoleWatch, shot

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

SESSION_URL = re.compile(r"#/s/(session_\d{8}_\d{6}_[0-9a-f]{8})$")
# A 2x2 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAYAAABytg0kAAAAFklEQVR42mP8z8Dwn4GBgYGJAQoYGQAi/gL/l1XQ1QAAAABJRU5ErkJggg=="
)


def open_new_session(page: Any, server: ApiaryServer, queen: str = "queen_technology") -> str:
    page.goto(server.url + "/")
    page.locator(f"#queen-grid .queen-card[data-queen={queen}]").click()
    expect(page).to_have_url(SESSION_URL)
    session_id = SESSION_URL.search(page.url).group(1)
    wait_ready(page)
    return session_id


def wait_ready(page: Any) -> None:
    """The queen is idle: composer enabled and the stream is live."""
    expect(page.locator("#composer-input")).to_be_enabled(timeout=15_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)


def send(page: Any, text: str) -> None:
    box = page.locator("#composer-input")
    box.fill(text)
    box.press("Enter")


def queen_text(page: Any) -> Any:
    return page.locator(".msg.queen .bubble")


def assert_no_duplicates(page: Any, server: ApiaryServer, session_id: str) -> None:
    """What the page shows matches the stored history one to one."""
    events = server.history(session_id)
    inputs = [e["data"]["content"] for e in events if e["type"] == "client_input_received"]
    shown = page.locator(".msg.user .bubble").all_inner_texts()
    assert shown == inputs
    turns = {(e["data"].get("iteration"), e["data"].get("inner_turn")) for e in events
             if e["type"] == "client_output_delta" and e["stream_id"] == "queen"}
    assert page.locator(".msg.queen[data-turn]").count() == len(turns)
    ids = page.locator(".msg.user").evaluate_all("els => els.map(e => e.dataset.eventId)")
    assert len(ids) == len(set(ids))
    tool_ids = [e["data"]["tool_use_id"] for e in events
                if e["type"] == "tool_call_started" and e["data"]["tool_name"] != "ask_user"]
    assert page.locator(".step").count() == len(tool_ids)


def test_create_session_chat_and_stream(server: ApiaryServer, page: Any) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#queen-grid .queen-card")).to_have_count(8)
    expect(page.locator(".sidebar .queen-item")).to_have_count(8)
    expect(page.locator(".side-empty")).to_contain_text("No sessions yet")
    assert shot(page, "01-start").exists()

    session_id = open_new_session(page, server)
    # The queen greets; the session shows in the sidebar, marked active and live.
    expect(queen_text(page).first).to_contain_text("demo model")
    item = page.locator(f".session-item[data-session-id={session_id}]")
    expect(item).to_have_class(re.compile("active"))
    expect(item.locator(".live-dot")).to_be_visible()
    expect(page.locator("#queen-name")).to_have_text("Ada")

    # Shift+Enter is a newline, Enter sends. The composer is disabled while she streams.
    box = page.locator("#composer-input")
    box.fill("demo:delay 40")
    box.press("Shift+Enter")
    box.type("Tell me about hives and bees please")
    assert box.input_value() == "demo:delay 40\nTell me about hives and bees please"
    box.press("Enter")
    expect(box).to_be_disabled()
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator(".msg.user .bubble").last).to_have_text("demo:delay 40\nTell me about hives and bees please")
    expect(page.locator(".bubble.cursor")).to_have_count(1)
    shot(page, "02-streaming")
    expect(queen_text(page).last).to_contain_text('Tell me about hives and bees please".', timeout=15_000)
    wait_ready(page)
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator(".bubble.cursor")).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "composer-input"
    # The streamed text equals the final snapshot of the stored turn.
    final = [e for e in server.history(session_id) if e["type"] == "client_output_delta"][-1]["data"]["snapshot"]
    assert queen_text(page).last.inner_text().strip() == final.strip()
    assert_no_duplicates(page, server, session_id)
    shot(page, "03-chat")


def test_tool_call_is_a_collapsible_step(shared_server: ApiaryServer, page: Any) -> None:
    server = shared_server
    session_id = open_new_session(page, server)
    send(page, "Have a look around\ndemo:tool list_directory {}")
    step = page.locator(".step").first
    expect(step).to_have_class(re.compile(r"\bdone\b"))
    expect(step.locator(".tname")).to_have_text("list_directory")
    # Collapsed by default; opening shows the input and the result.
    assert step.evaluate("el => el.open") is False
    expect(step.locator(".tbody")).to_be_hidden()
    step.locator("summary").click()
    expect(step.locator(".tbody")).to_be_visible()
    expect(step.locator(".tbody pre").first).to_have_text("{}")
    expect(step.locator(".tbody pre").last).to_contain_text("is empty")
    expect(queen_text(page).filter(has_text="The tool answered")).to_have_count(1)
    wait_ready(page)
    # Keyboard: the summary is focusable and toggles with Enter.
    step.locator("summary").focus()
    page.keyboard.press("Enter")
    assert step.evaluate("el => el.open") is False
    page.keyboard.press("Enter")
    assert step.evaluate("el => el.open") is True
    assert_no_duplicates(page, server, session_id)
    shot(page, "04-tool-step")
    page.emulate_media(color_scheme="dark")
    shot(page, "04-tool-step-dark")


def test_question_with_options(shared_server: ApiaryServer, page: Any) -> None:
    server = shared_server
    open_new_session(page, server)
    send(page, "demo:ask Which colour should the logo be?")
    card = page.locator(".card.question")
    expect(card).to_contain_text("Which colour should the logo be?")
    expect(page.locator("#composer-input")).to_be_enabled()
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", re.compile("Answer Ada"))
    shot(page, "05-question")
    card.locator("button[data-option=Yes]").click()
    expect(page.locator(".msg.user .bubble").last).to_have_text("Yes")
    expect(card).to_have_class(re.compile("answered"))
    expect(card.locator("button[data-option=Yes]")).to_have_class(re.compile("chosen"))
    expect(queen_text(page).last).to_contain_text("The tool answered: Yes")
    wait_ready(page)


def test_image_attachment_shows_thumbnails(shared_server: ApiaryServer, page: Any) -> None:
    server = shared_server
    open_new_session(page, server)
    page.locator("#attach-input").set_input_files([{"name": "dot.png", "mimeType": "image/png", "buffer": PNG}])
    expect(page.locator(".composer .attachment img")).to_have_count(1)
    send(page, "What is in this picture?")
    expect(page.locator(".msg.user").last.locator(".thumbs img")).to_have_count(1)
    expect(queen_text(page).last).to_contain_text("I also received 1 image(s)")
    expect(page.locator(".composer .attachment")).to_have_count(0)
    wait_ready(page)
    # Thumbnails survive a reload of the tab.
    page.reload()
    wait_ready(page)
    expect(page.locator(".msg.user").last.locator(".thumbs img")).to_have_count(1)


def test_stop_interrupts_the_queen(shared_server: ApiaryServer, page: Any) -> None:
    server = shared_server
    session_id = open_new_session(page, server)
    send(page, "demo:delay 250\nplease write a very long answer with a great many words in it")
    expect(page.locator(".bubble.cursor")).to_have_count(1)
    page.locator("#stop").click()
    wait_ready(page)
    expect(page.locator(".msg.queen .stopped")).to_have_count(1)
    events = server.history(session_id)
    assert events[-1]["type"] == "client_input_requested"
    # She answers the next message normally.
    send(page, "Hello again")
    expect(queen_text(page).last).to_contain_text('You said: "Hello again"')
    wait_ready(page)


def test_reload_mid_conversation_shows_history_once(shared_server: ApiaryServer, page: Any) -> None:
    server = shared_server
    session_id = open_new_session(page, server)
    send(page, "First question\ndemo:tool list_directory {}")
    expect(page.locator(".step.done")).to_have_count(1)
    wait_ready(page)
    send(page, "demo:delay 70\nnow a slower answer that streams for a while so we can reload")
    expect(page.locator(".bubble.cursor")).to_have_count(1)
    expect(queen_text(page).last).to_contain_text("demo model")
    page.reload()
    # After the reload: history once, then the rest of the stream, ending idle.
    expect(page).to_have_url(re.compile(session_id))
    expect(queen_text(page).last).to_contain_text("so we can reload", timeout=15_000)
    wait_ready(page)
    assert_no_duplicates(page, server, session_id)
    expect(page.locator(".msg.user .bubble")).to_have_count(2)
    # A second reload when idle shows exactly the same conversation.
    before = page.locator("#messages").inner_text()
    page.reload()
    wait_ready(page)
    expect(queen_text(page).last).to_contain_text("so we can reload")
    assert page.locator("#messages").inner_text() == before
    shot(page, "06-after-reload")


def test_server_restart_reconnects_and_keeps_working(server: ApiaryServer, page: Any, console: ConsoleWatch) -> None:
    session_id = open_new_session(page, server)
    send(page, "Before the restart")
    expect(queen_text(page).last).to_contain_text('You said: "Before the restart"')
    wait_ready(page)
    # While the server is down the browser logs refused connections: expected here, and only here.
    console.allow(r"ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|Failed to load resource")
    server.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", re.compile("reconnecting|connecting"), timeout=10_000)
    shot(page, "07-reconnecting")
    server.start()
    wait_ready(page)
    send(page, "After the restart")
    expect(queen_text(page).last).to_contain_text('You said: "After the restart"', timeout=15_000)
    wait_ready(page)
    assert_no_duplicates(page, server, session_id)
    expect(page.locator(".msg.user .bubble")).to_have_text(["Before the restart", "After the restart"])

    # Restart with no page open: the session is stored (cold) and the page reopens it on load.
    page.goto("about:blank")
    server.restart()
    status, cold = server.api("GET", f"/api/sessions/{session_id}")
    assert status == 200 and cold.get("cold") is True
    page.goto(f"{server.url}/#/s/{session_id}")
    wait_ready(page)
    expect(page.locator(".msg.user .bubble")).to_have_text(["Before the restart", "After the restart"])
    send(page, "Third message")
    expect(queen_text(page).last).to_contain_text('You said: "Third message"')
    wait_ready(page)
    assert_no_duplicates(page, server, session_id)


def test_sessions_switch_and_delete(server: ApiaryServer, page: Any) -> None:
    first = open_new_session(page, server, "queen_technology")
    send(page, "I am the first session")
    expect(queen_text(page).last).to_contain_text("first session")
    wait_ready(page)
    page.locator(".sidebar .queen-item[data-queen=queen_legal]").click()
    page.wait_for_url(lambda url: SESSION_URL.search(url) is not None and first not in url)
    second = SESSION_URL.search(page.url).group(1)
    assert second != first
    wait_ready(page)
    expect(page.locator("#queen-name")).to_have_text("Lex")
    expect(page.locator(".session-item")).to_have_count(2)

    # Switching back shows the first conversation, and the URL follows.
    page.locator(f".session-item[data-session-id={first}] .session-link").click()
    expect(page).to_have_url(re.compile(f"#/s/{first}$"))
    expect(page.locator(".msg.user .bubble")).to_have_text(["I am the first session"])
    wait_ready(page)
    page.go_back()
    expect(page).to_have_url(re.compile(f"#/s/{second}$"))
    expect(page.locator("#queen-name")).to_have_text("Lex")
    shot(page, "08-two-sessions")

    # End the second (live) session: it stays in the list as stored, no longer live.
    item = page.locator(f".session-item[data-session-id={second}]")
    item.hover()
    item.get_by_role("button", name="End session").click()
    expect(item.locator(".live-dot")).to_have_count(0)
    expect(page.locator('[data-banner="ended"]')).to_contain_text("This session has ended")
    expect(page.locator("#composer-input")).to_be_disabled()
    # Resuming brings it back with its history.
    page.locator("#resume-session").click()
    wait_ready(page)
    expect(page.locator('[data-banner="ended"]')).to_have_count(0)
    expect(item.locator(".live-dot")).to_have_count(1)

    # Delete it: confirm, gone from the list and from the server, back to the start page.
    item.hover()
    item.get_by_role("button", name="Delete session").click()
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("Delete session?")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator(f".session-item[data-session-id={second}]")).to_have_count(0)
    expect(page.locator("#home")).to_be_visible()
    status, _ = server.api("GET", f"/api/sessions/{second}")
    assert status == 404


def test_locked_session_offers_a_fork(shared_server: ApiaryServer, page: Any, console: ConsoleWatch) -> None:
    server = shared_server
    session_id = open_new_session(page, server)
    # The server locks the conversation behind the page's back; the next chat answers 409.
    status, body = server.api("POST", f"/api/sessions/{session_id}/mark-colony-spawned", {"colony_name": "demo"})
    assert status == 200, body
    console.allow(r"status of 409")
    send(page, "Are you still there?")
    expect(page.locator("#composer-error")).to_contain_text("locked")
    banner = page.locator('[data-banner="locked"]')
    expect(banner).to_contain_text("demo")
    expect(page.locator("#compact-fork")).to_be_visible()
    expect(page.locator("#composer-input")).to_be_disabled()
    shot(page, "09-locked")
    # A fresh load knows it from the session object (colony_spawned: true).
    page.reload()
    expect(page.locator('[data-banner="locked"]')).to_be_visible()
    expect(page.locator("#composer-input")).to_be_disabled()
    # Compact and fork: a new session with the same queen opens, unlocked, and she answers.
    page.locator("#compact-fork").click()
    page.wait_for_url(lambda url: SESSION_URL.search(url) is not None and session_id not in url)
    fork = SESSION_URL.search(page.url).group(1)
    expect(page.locator('[data-banner="locked"]')).to_have_count(0)
    expect(page.locator("#queen-name")).to_have_text("Ada")
    wait_ready(page)
    send(page, "Carry on from the summary")
    expect(queen_text(page).last).to_contain_text("Carry on from the summary")
    status, detail = server.api("GET", f"/api/sessions/{fork}")
    assert status == 200 and detail["colony_spawned"] is False


def test_api_token_is_asked_once(tmp_path: Any, browser: Any, console: ConsoleWatch) -> None:
    srv = ApiaryServer(tmp_path / "home", token="s3cret-token")
    srv.start()
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(srv.url + "/")
        dialog = pg.locator("dialog[open]")
        expect(dialog).to_contain_text("API token required")
        pg.locator("#api-token").fill("wrong")
        pg.keyboard.press("Enter")
        expect(dialog.locator(".d-error")).to_contain_text("not accepted")
        shot(pg, "10-token")
        pg.locator("#api-token").fill("s3cret-token")
        pg.keyboard.press("Enter")
        expect(pg.locator("#queen-grid .queen-card")).to_have_count(8)
        pg.locator("#queen-grid .queen-card[data-queen=queen_growth]").click()
        wait_ready(pg)
        send(pg, "Token works")
        expect(queen_text(pg).last).to_contain_text('You said: "Token works"')
        wait_ready(pg)
        assert pg.evaluate("sessionStorage.getItem('apiary.apiToken')") == "s3cret-token"
        # The stream (fetch-based SSE) carries the token too; a reload does not ask again.
        pg.reload()
        wait_ready(pg)
        expect(pg.locator("dialog[open]")).to_have_count(0)
    finally:
        context.close()
        srv.stop()
    unexpected = [e for e in errors if "status of 401" not in e]
    assert not unexpected, unexpected
