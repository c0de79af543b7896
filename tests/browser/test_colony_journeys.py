"""Colony journeys in a real browser: spawn from a conversation, open, trigger, stop, pause,
answer a worker, checkpoints with resume and replay."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from uihelpers import ApiaryServer, shot

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

SESSION_URL = re.compile(r"#/s/(session_\d{8}_\d{6}_[0-9a-f]{8})$")


@pytest.fixture
def server(shared_server: ApiaryServer) -> ApiaryServer:
    """Colony journeys share one server: each works in its own colony and sessions."""
    return shared_server


def wait_idle(page: Any) -> None:
    expect(page.locator("#composer-input")).to_be_enabled(timeout=15_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)


def make_colony(server: ApiaryServer, name: str, goals: list[str]) -> tuple[str, str]:
    """A queen session, a colony spawned from it, and the colony opened: (source id, colony session id)."""
    status, created = server.api("POST", "/api/queen/queen_technology/session/new", {})
    assert status == 200, created
    status, spawned = server.api("POST", f"/api/sessions/{created['session_id']}/colony-spawn",
                                 {"colony_name": name, "tasks": [{"goal": g} for g in goals]})
    assert status == 200, spawned
    status, opened = server.api("POST", "/api/sessions", {"agent_path": spawned["colony_path"]})
    assert status == 201, opened
    return created["session_id"], opened["session_id"]


def open_colony_page(page: Any, server: ApiaryServer, session_id: str) -> None:
    page.goto(f"{server.url}/#/s/{session_id}")
    expect(page.locator("#colony")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator("#task-counts")).to_be_visible()


def worker_sessions(server: ApiaryServer, session_id: str) -> list[dict[str, Any]]:
    status, body = server.api("GET", f"/api/sessions/{session_id}/worker-sessions")
    assert status == 200, body
    return body["worker_sessions"]


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_spawn_colony_from_conversation_and_open_it(server: ApiaryServer, page: Any) -> None:
    page.goto(server.url + "/")
    page.locator("#queen-grid .queen-card[data-queen=queen_product_strategy]").click()
    wait_idle(page)
    source = SESSION_URL.search(page.url).group(1)
    page.locator("#composer-input").fill("We need a competitor analysis.")
    page.locator("#composer-input").press("Enter")
    expect(page.locator(".msg.queen .bubble").last).to_contain_text("competitor analysis")
    wait_idle(page)

    page.locator("#spawn-colony").click()
    dialog = page.locator("#spawn-dialog")
    expect(dialog).to_be_visible()
    # The server's own validation message is shown as is.
    page.locator("#colony-name").fill("Competitor Scan")
    expect(page.locator("#colony-name")).to_have_value("competitor_scan")
    page.locator("#colony-tasks").fill("List our five main competitors\nSummarise their pricing pages")
    shot(page, "11-spawn-form")
    page.locator("#spawn-submit").click()
    result = page.locator("#spawn-result")
    expect(result).to_contain_text("2 queued")
    expect(page.locator("#spawn-status")).to_have_attribute("data-status", re.compile("done|skipped"))
    expect(page.locator("#spawn-status")).to_have_text("ready")
    shot(page, "12-spawn-result")
    # The conversation keeps a card for the colony too, following the compaction status.
    card = page.locator('.colony-card[data-colony="competitor_scan"]')
    expect(card).to_have_count(1)
    expect(card.locator(".tag")).to_have_text("ready")

    page.locator("#open-colony").click()
    page.wait_for_url(lambda url: SESSION_URL.search(url) is not None and source not in url, timeout=20_000)
    colony_sid = SESSION_URL.search(page.url).group(1)
    expect(page.locator("#colony")).to_be_visible()
    expect(page.locator("#colony .colony-head .t")).to_have_text("Competitor Scan")
    expect(page.locator("#task-list .task-item")).to_have_count(2)
    expect(page.locator("#task-counts")).to_contain_text("2 pending")
    expect(page.locator("#goal-bar")).to_have_attribute("aria-valuenow", "0")
    expect(page.locator(f".session-item[data-session-id={colony_sid}] .tag.accent")).to_have_text("colony")
    expect(page.locator(f".session-item[data-session-id={source}] .tag")).to_have_text("spawned")
    # The hide/show toggle keeps the panel one click away.
    page.locator("#toggle-colony").click()
    expect(page.locator("#colony")).to_be_hidden()
    page.locator("#toggle-colony").click()
    expect(page.locator("#colony")).to_be_visible()
    shot(page, "13-colony-panel")


def test_trigger_run_completes_and_progress_updates(server: ApiaryServer, page: Any) -> None:
    _, colony = make_colony(server, "quick_scan", ["List our five main competitors", "Summarise their pricing"])
    open_colony_page(page, server, colony)
    expect(page.locator("#colony-workers")).to_contain_text("No workers yet")
    page.locator("#trigger-run").click()
    expect(page.locator("#run-result")).to_contain_text("Started execution")
    # Live: the task queue stream, goal progress events, workers and executions.
    expect(page.locator("#task-counts")).to_contain_text("1 done", timeout=15_000)
    expect(page.locator("#goal-bar")).to_have_attribute("aria-valuenow", "50")
    expect(page.locator('#task-list .task-item[data-status="done"]')).to_have_count(1)
    expect(page.locator("#worker-list .row-item")).to_have_count(1)
    expect(page.locator("#worker-list")).to_contain_text("demo result for")
    expect(page.locator('#execution-list .row-item[data-status="completed"]')).to_have_count(1)
    expect(page.locator(".note").filter(has_text="completed")).not_to_have_count(0)
    expect(page.locator("#activity")).to_contain_text("set_output")
    shot(page, "14-colony-run")


def test_stop_a_running_worker(server: ApiaryServer, page: Any) -> None:
    _, colony = make_colony(server, "slow_scan", ["demo:delay 1500"])
    open_colony_page(page, server, colony)
    page.locator("#trigger-run").click()
    row = page.locator('#execution-list .row-item[data-status="active"]')
    expect(row).to_have_count(1)
    expect(page.locator("#task-counts")).to_contain_text("1 running")
    shot(page, "15-colony-running")
    row.locator('button[data-action="stop"]').click()
    expect(page.locator('#execution-list .row-item[data-status="active"]')).to_have_count(0, timeout=15_000)
    expect(page.locator(".note").filter(has_text="stopped")).to_have_count(1)
    events = server.history(colony)
    failed = [e for e in events if e["type"] == "execution_failed"]
    assert failed and failed[-1]["data"].get("cancelled") is True


def test_pause_all_then_resume_from_a_checkpoint(server: ApiaryServer, page: Any) -> None:
    _, colony = make_colony(server, "pausable", ["demo:delay 500"])
    open_colony_page(page, server, colony)
    page.locator("#trigger-run").click()
    expect(page.locator('#execution-list .row-item[data-status="active"]')).to_have_count(1)
    # Wait for the first checkpoint, so that the paused run can be resumed.
    wait_for(lambda: any(w["checkpoint_count"] for w in worker_sessions(server, colony)))
    page.locator("#pause-all").click()
    expect(page.locator("#run-result")).to_contain_text("Paused 1 execution")
    row = page.locator('#execution-list .row-item[data-status="paused"]')
    expect(row).to_have_count(1, timeout=15_000)
    expect(page.locator("#phase")).to_have_text("Reviewing")
    row.locator('button[data-action="checkpoints"]').click()
    box = page.locator(".checkpoint-box")
    expect(box.locator(".checkpoint").first).to_be_visible()
    expect(box.locator("input[type=radio]:checked")).to_have_count(1)
    shot(page, "16-checkpoints")
    box.locator('button[data-action="resume"]').click()
    expect(box).to_contain_text("Resumed")
    expect(page.locator('#execution-list .row-item[data-status="completed"]')).to_have_count(1, timeout=20_000)
    assert any(e["type"] == "execution_resumed" for e in server.history(colony))


def test_replay_recorded_from_a_checkpoint(server: ApiaryServer, page: Any) -> None:
    _, colony = make_colony(server, "replayable", ["List our five main competitors"])
    open_colony_page(page, server, colony)
    page.locator("#trigger-run").click()
    row = page.locator('#execution-list .row-item[data-status="completed"]')
    expect(row).to_have_count(1, timeout=15_000)
    row.locator('button[data-action="checkpoints"]').click()
    box = page.locator(".checkpoint-box")
    expect(box.locator(".checkpoint")).not_to_have_count(0)
    box.locator(".checkpoint input").first.check()
    box.locator("select").select_option("recorded")
    box.locator('button[data-action="replay"]').click()
    expect(box).to_contain_text("Replaying")
    wait_for(lambda: sum(e["type"] == "execution_started" for e in server.history(colony)) >= 2)
    expect(page.locator('#execution-list .row-item[data-status="active"]')).to_have_count(0, timeout=15_000)


def test_answer_a_worker_escalation(server: ApiaryServer, page: Any) -> None:
    _, colony = make_colony(server, "needs_help", ["demo:escalate Which market should I focus on?"])
    open_colony_page(page, server, colony)
    page.locator("#trigger-run").click()
    question = page.locator("#colony-questions .worker-q")
    expect(question).to_contain_text("Which market should I focus on?", timeout=15_000)
    shot(page, "17-worker-question")
    question.locator("textarea").fill("Focus on Europe first.")
    question.get_by_role("button", name="Send to worker").click()
    expect(page.locator("#colony-questions")).to_be_hidden()
    expect(page.locator("#activity")).to_contain_text("Answered worker")
    expect(page.locator('#execution-list .row-item[data-status="completed"]')).to_have_count(1, timeout=15_000)
    injected = [e for e in server.history(colony) if e["type"] == "escalation_requested"]
    assert injected


def test_colony_errors_show_the_api_text(server: ApiaryServer, page: Any, console: Any) -> None:
    _, colony = make_colony(server, "bad_input", ["List our five main competitors"])
    open_colony_page(page, server, colony)
    console.allow(r"status of 400")
    page.locator("#colony-run details summary").click()
    page.locator("#trigger-input").fill("[1, 2]")
    page.locator("#trigger-run").click()
    expect(page.locator("#run-result")).to_have_text("Input data must be a JSON object.")
    page.locator("#trigger-input").fill('{"x": 1}')
    page.locator("#entry-point").evaluate("el => { el.append(new Option('nope', 'nope')); el.value = 'nope'; }")
    page.locator("#trigger-run").click()
    expect(page.locator("#run-result")).to_have_text("Entry point 'nope' not found")
