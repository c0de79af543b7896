"""The crash loop: a colony at work, a server SIGKILLed at random moments and restarted on the same home,
then the invariants of what it stored. Used by ``tests/e2e/test_crash_loop.py`` (20 rounds) and
``scripts/crash_loop.py`` (as many as asked).

One round: trigger the colony's worker one to three times (each trigger restarts the running
execution), sometimes chat with a queen that is running a tool, wait a random moment (seeded), then
SIGKILL. Restart with ``APIARY_COLONIES__STALE_CLAIM_S=1`` (heartbeat 0.3 s, so a live claim is never
stale), then the next round's first request restores the colony session. Some kills fall right after
a restart, while the server recovers. After the rounds, the colony is driven (no more kills) until its
queue is empty, the server is stopped with SIGTERM, and the stores are checked:

- every task ended exactly once: each is ``done`` (or ``failed``), ``apiary_task_events`` holds at
  most one transition into ``done`` per task and none out of ``done``;
- every session's event log has the ids 1..N, no gap, no duplicate, each body carrying its own id;
  the HTTP history of the sessions the loop used agrees with it (strictly increasing ids, same last id);
- every stored conversation is well-formed: each tool call has exactly one tool result, after it, and
  no result answers a call that does not exist.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve_proc import ServeProc, ServerFailedToStart

COLONY = "crashloop"
ENV = {"APIARY_COLONIES__STALE_CLAIM_S": "1", "APIARY_COLONIES__HEARTBEAT_S": "0.3",
       "APIARY_COLONIES__RESURRECT_DELAY_S": "0.2", "APIARY_COLONIES__CANCEL_GRACE_S": "2"}
DONE_STATES = ("done", "failed")


@dataclass
class Report:
    seed: int
    rounds: int
    kills: int = 0
    kills_during_recovery: int = 0
    kills_while_a_worker_ran: int = 0
    restarts: int = 0
    triggers: int = 0
    chats: int = 0
    http_errors: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    task_transitions: int = 0
    sessions_checked: int = 0
    events_checked: int = 0
    conversations_checked: int = 0
    messages_checked: int = 0
    tool_calls_checked: int = 0
    seconds: float = 0.0
    drain_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["http_errors"] = dict(self.http_errors)
        return out


class CrashLoop:
    def __init__(self, base: Path, *, rounds: int, seed: int, tasks: int = 12,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.base = base
        self.home = base / "home"
        self.rng = random.Random(seed)
        self.report = Report(seed=seed, rounds=rounds)
        self.n_tasks = tasks
        self.log = log
        self.proc = ServeProc(home=self.home, logs=base / "logs", env=dict(ENV))
        self.client: httpx.Client | None = None
        self.spawner = self.chatter = self.colony_session = ""
        self.colony_path = ""

    # -- the server --------------------------------------------------------------------------

    def start(self) -> None:
        for attempt in range(3):
            try:
                self.proc.start(timeout=30)
                break
            except ServerFailedToStart as exc:
                self.report.problems.append(f"start {self.proc.starts} failed: {exc}")
                if attempt == 2:
                    raise
        self.report.restarts += 1
        if self.client is not None:
            self.client.close()
        self.client = httpx.Client(base_url=self.proc.url, timeout=httpx.Timeout(15.0))

    def kill(self) -> None:
        code = self.proc.kill()
        assert code == -signal.SIGKILL, f"server exited with {code} before the kill"
        self.report.kills += 1

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One request; 5xx and transport errors are counted (and 5xx reported), never raised."""
        assert self.client is not None
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.report.http_errors[type(exc).__name__] += 1
            return None
        if resp.status_code >= 500:
            self.report.http_errors[str(resp.status_code)] += 1
            if resp.status_code != 503:
                self.report.problems.append(f"{method} {path} -> {resp.status_code} {resp.text[:200]}")
        return resp

    # -- setting up ------------------------------------------------------------------------

    def setup(self) -> None:
        self.start()
        assert self.client is not None
        c = self.client
        self.spawner = c.post("/api/sessions", json={}).json()["session_id"]
        self.chatter = c.post("/api/sessions", json={}).json()["session_id"]
        tasks = [{"goal": f"demo:delay 80\nwork on item {i} of the crash loop, step by step", "max_retries": 1000}
                 for i in range(self.n_tasks)]
        spawn = c.post(f"/api/sessions/{self.spawner}/colony-spawn", json={"colony_name": COLONY, "tasks": tasks})
        assert spawn.status_code == 200, spawn.text
        self.colony_path = spawn.json()["colony_path"]
        opened = c.post("/api/sessions", json={"agent_path": self.colony_path})
        assert opened.status_code == 201, opened.text
        self.colony_session = opened.json()["session_id"]

    # -- one round -------------------------------------------------------------------------

    def trigger(self) -> None:
        self.report.triggers += 1
        self.call("POST", f"/api/sessions/{self.colony_session}/trigger", json={})

    def chat(self) -> None:
        self.report.chats += 1
        message = self.rng.choice(["demo:delay 20\ndemo:tool list_directory {}\nand tell me what is there",
                                   "demo:delay 15\nplease answer with a long, slow sentence about bees",
                                   'demo:tool write_file {"path": "note.txt", "content": "hello"}'])
        self.call("POST", f"/api/sessions/{self.chatter}/chat", json={"message": message})

    def round(self, n: int) -> None:
        if self.rng.random() < 0.15:
            # die while recovering: the first request restores the sessions and resumes the worker
            self.call("GET", f"/api/sessions/{self.colony_session}/stats")
            time.sleep(self.rng.uniform(0.0, 0.3))
            self.report.kills_during_recovery += 1
        else:
            for _ in range(self.rng.randint(1, 3)):
                self.trigger()
                if self.rng.random() < 0.4:
                    self.chat()
                time.sleep(self.rng.uniform(0.05, 0.6))
            time.sleep(self.rng.uniform(0.0, 0.6))
        stats = self.call("GET", f"/api/sessions/{self.colony_session}/stats")
        if stats is not None and stats.status_code == 200 and stats.json().get("active_executions"):
            self.report.kills_while_a_worker_ran += 1
        self.log(f"round {n}: kill after {self.report.triggers} triggers")
        self.kill()
        self.start()

    # -- the end ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        resp = self.call("GET", f"/api/colonies/{COLONY}/progress/snapshot")
        return resp.json()["tasks"] if resp is not None and resp.status_code == 200 else {}

    def drain(self, timeout: float) -> None:
        """No more kills: trigger whenever nothing runs, until every task ended."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            counts = self.counts()
            if counts and sum(counts.get(s, 0) for s in DONE_STATES) == counts.get("total", -1):
                break
            stats = self.call("GET", f"/api/sessions/{self.colony_session}/stats")
            active = stats.json().get("active_executions", 0) if stats is not None and stats.status_code == 200 else 0
            if not active:
                self.trigger()
            time.sleep(0.3)
        else:
            self.report.problems.append(f"queue not empty after {timeout:.0f} s of draining: {self.counts()}")
        self.report.drain_seconds = round(time.monotonic() - started, 1)

    def http_histories(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for sid in (self.spawner, self.chatter, self.colony_session):
            resp = self.call("GET", f"/api/sessions/{sid}/events/history", params={"limit": "10000"})
            if resp is not None and resp.status_code == 200:
                found[sid] = [e["id"] for e in resp.json()["events"]]
        return found

    def run(self, *, drain_timeout: float = 60.0) -> Report:
        began = time.monotonic()
        try:
            self.setup()
            for n in range(1, self.report.rounds + 1):
                self.round(n)
            self.drain(drain_timeout)
            histories = self.http_histories()
            code = self.proc.stop()
            if code != 0:
                self.report.problems.append(f"SIGTERM exit code {code}")
        finally:
            if self.client is not None:
                self.client.close()
            self.proc.cleanup()
        check_stores(self.home, self.report, histories)
        self.report.seconds = round(time.monotonic() - began, 1)
        return self.report


# -- the invariants -------------------------------------------------------------------------------


def check_tasks(db_path: Path, report: Report) -> None:
    with sqlite3.connect(db_path) as db:
        tasks = dict(db.execute("SELECT id, status FROM tasks").fetchall())
        moves = db.execute("SELECT task_id, from_status, to_status FROM apiary_task_events ORDER BY id").fetchall()
    db.close()
    report.tasks = len(tasks)
    report.task_transitions = len(moves)
    into_done = Counter(t for t, _f, to in moves if to == "done")
    out_of_done = [t for t, f, to in moves if f == "done" and to != "done"]
    for task_id, status in tasks.items():
        if status not in DONE_STATES:
            report.problems.append(f"task {task_id} ended {status!r}, not done or failed")
        if into_done[task_id] > 1:
            report.problems.append(f"task {task_id} went into done {into_done[task_id]} times")
        if status == "done" and into_done[task_id] != 1:
            report.problems.append(f"task {task_id} is done with {into_done[task_id]} transitions into done")
    for task_id in out_of_done:
        report.problems.append(f"task {task_id} left done")
    report.tasks_done = sum(1 for s in tasks.values() if s == "done")
    report.tasks_failed = sum(1 for s in tasks.values() if s == "failed")


def check_events(db: sqlite3.Connection, report: Report, histories: dict[str, list[int]]) -> None:
    by_session: dict[str, list[int]] = {}
    for sid, event_id, body in db.execute("SELECT session_id, id, body FROM events ORDER BY session_id, id"):
        by_session.setdefault(sid, []).append(event_id)
        report.events_checked += 1
        try:
            inner = json.loads(body).get("id")
        except ValueError:
            report.problems.append(f"session {sid} event {event_id}: body is not JSON")
            continue
        if inner is not None and inner != event_id:
            report.problems.append(f"session {sid} event {event_id}: body says id {inner}")
    report.sessions_checked = len(by_session)
    for sid, ids in by_session.items():
        if ids != list(range(1, len(ids) + 1)):
            missing = sorted(set(range(1, max(ids) + 1)) - set(ids))[:10]
            report.problems.append(f"session {sid}: event ids are not 1..{len(ids)} (missing {missing})")
    for sid, ids in histories.items():
        stored = by_session.get(sid, [])
        if ids != sorted(set(ids)):
            report.problems.append(f"session {sid}: history ids not strictly increasing")
        if ids and stored and ids[-1] > stored[-1]:
            report.problems.append(f"session {sid}: history shows id {ids[-1]} above the log's {stored[-1]}")


def check_conversations(db: sqlite3.Connection, report: Report) -> None:
    owners: dict[str, list[dict[str, Any]]] = {}
    for owner, _seq, body in db.execute("SELECT owner, seq, body FROM conv_messages ORDER BY owner, seq"):
        owners.setdefault(owner, []).append(json.loads(body))
    report.conversations_checked = len(owners)
    for owner, messages in owners.items():
        report.messages_checked += len(messages)
        calls: dict[str, int] = {}
        results: Counter[str] = Counter()
        for index, msg in enumerate(messages):
            for call in msg.get("tool_calls") or []:
                if call.get("id") in calls:
                    report.problems.append(f"{owner}: tool call id {call.get('id')} used twice")
                calls[call.get("id")] = index
            if msg.get("role") == "tool":
                use_id = msg.get("tool_use_id")
                results[use_id] += 1
                if use_id not in calls:
                    report.problems.append(f"{owner}: result for unknown or later call {use_id} at {index}")
        report.tool_calls_checked += len(calls)
        for call_id in calls:
            if results[call_id] != 1:
                report.problems.append(f"{owner}: tool call {call_id} has {results[call_id]} results")


def check_stores(home: Path, report: Report, histories: dict[str, list[int]]) -> None:
    check_tasks(home / "colonies" / COLONY / "data" / "progress.db", report)
    with sqlite3.connect(home / "apiary.db") as db:
        check_events(db, report, histories)
        check_conversations(db, report)
    db.close()
