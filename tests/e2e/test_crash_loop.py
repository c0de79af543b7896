"""Crash loop (issue "Reliability and security", point 6): a colony at work while the server is SIGKILLed
at seeded random moments and restarted on the same home, then every task ended exactly once, every event
log is 1..N and every stored conversation is well-formed. See ``tests/crashloop.py`` for the details.

``APIARY_CRASH_ROUNDS`` (default 20, about 60-90 s) and ``APIARY_CRASH_SEED`` choose the run;
``scripts/crash_loop.py`` runs the long mode outside pytest.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from crashloop import COLONY, CrashLoop, Report, check_stores

ROUNDS = int(os.environ.get("APIARY_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("APIARY_CRASH_SEED", "20260501"))
TASKS = max(12, ROUNDS // 2)      # keeps the workers busy in a long run too


@pytest.mark.e2e
@pytest.mark.timeout(120 + 6 * ROUNDS)
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    report = CrashLoop(tmp_path, rounds=ROUNDS, seed=SEED, tasks=TASKS, log=print).run()
    print(json.dumps(report.as_dict(), indent=1))
    assert report.problems == [], "\n".join(report.problems)
    assert report.kills == ROUNDS
    assert report.tasks == TASKS and report.tasks_done + report.tasks_failed == TASKS
    assert report.sessions_checked >= 3 and report.events_checked > 0 and report.conversations_checked >= 3


# -- the checks themselves catch what they claim to (no server needed) ------------------------------


def _stores(home: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    (home / "colonies" / COLONY / "data").mkdir(parents=True)
    progress = sqlite3.connect(home / "colonies" / COLONY / "data" / "progress.db")
    progress.executescript("""
        CREATE TABLE tasks (id TEXT PRIMARY KEY, status TEXT);
        CREATE TABLE apiary_task_events (id INTEGER PRIMARY KEY, task_id TEXT, from_status TEXT, to_status TEXT);
        INSERT INTO tasks VALUES ('t1', 'done'), ('t2', 'done');
        INSERT INTO apiary_task_events (task_id, from_status, to_status) VALUES
            ('t1', NULL, 'pending'), ('t1', 'pending', 'claimed'), ('t1', 'claimed', 'done'),
            ('t2', NULL, 'pending'), ('t2', 'in_progress', 'done');
    """)
    main = sqlite3.connect(home / "apiary.db")
    main.executescript("""
        CREATE TABLE events (session_id TEXT, id INTEGER, type TEXT, body TEXT, PRIMARY KEY (session_id, id));
        CREATE TABLE conv_messages (owner TEXT, seq INTEGER, body TEXT, PRIMARY KEY (owner, seq));
        INSERT INTO events VALUES ('s', 1, 'a', '{"id": 1}'), ('s', 2, 'b', '{"id": 2}');
    """)
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}, {"id": "c2"}]},
            {"role": "tool", "tool_use_id": "c1", "content": "r1"},
            {"role": "tool", "tool_use_id": "c2", "content": "r2"}]
    main.executemany("INSERT INTO conv_messages VALUES ('queen:s', ?, ?)",
                     [(i, json.dumps(m)) for i, m in enumerate(msgs)])
    progress.commit()
    main.commit()
    return progress, main


def _problems(home: Path) -> list[str]:
    report = Report(seed=0, rounds=0)
    check_stores(home, report, {})
    return report.problems


@pytest.mark.parametrize("damage", ["none", "second_done", "left_done", "pending", "event_gap", "event_body_id",
                                    "missing_result", "double_result", "orphan_result"])
def test_the_checks_find_damage(tmp_path: Path, damage: str) -> None:
    progress, main = _stores(tmp_path)
    statements = {
        "second_done": (progress, "INSERT INTO apiary_task_events (task_id, from_status, to_status) "
                                  "VALUES ('t1', 'in_progress', 'done')"),
        "left_done": (progress, "INSERT INTO apiary_task_events (task_id, from_status, to_status) "
                                "VALUES ('t2', 'done', 'pending')"),
        "pending": (progress, "UPDATE tasks SET status = 'in_progress' WHERE id = 't2'"),
        "event_gap": (main, "INSERT INTO events VALUES ('s', 4, 'c', '{\"id\": 4}')"),
        "event_body_id": (main, "UPDATE events SET body = '{\"id\": 7}' WHERE id = 2"),
        "missing_result": (main, "DELETE FROM conv_messages WHERE seq = 3"),
        "double_result": (main, "INSERT INTO conv_messages VALUES ('queen:s', 4, "
                                "'{\"role\": \"tool\", \"tool_use_id\": \"c1\"}')"),
        "orphan_result": (main, "INSERT INTO conv_messages VALUES ('worker:x:s', 0, "
                                "'{\"role\": \"tool\", \"tool_use_id\": \"zz\"}')"),
    }
    if damage in statements:
        db, sql = statements[damage]
        db.execute(sql)
        db.commit()
    progress.close()
    main.close()
    problems = _problems(tmp_path)
    assert (problems == []) == (damage == "none"), problems
