"""Seeding the task queue (SPEC B 7 "Seed"): validate everything first, then one all-or-nothing write.

``validate_tasks`` is public so a route can reject a bad body before it writes anything else
(part A 2.13 checks the tasks before the fork starts).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from apiary.core.errors import Conflict, InvalidRequest
from apiary.storage.sqlite.progress_schema import ISO_SECONDS_SQL, now_param, write_transaction

ENQUEUE_SOURCE = "enqueue_tool"
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class StepSpec:
    seq: int
    title: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class SopSpec:
    key: str
    description: str
    required: int
    note: str | None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One validated task, ready to insert."""

    id: str
    goal: str
    seq: int | None
    priority: int
    payload: str | None
    max_retries: int
    parent_task_id: str | None
    steps: tuple[StepSpec, ...]
    sop_items: tuple[SopSpec, ...]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _opt_int(where: str, obj: dict[str, Any], field: str) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    # bool is an int subclass, but `true` is not a priority.
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        raise InvalidRequest(f"{where}.{field} must be an integer")
    return value


def _int_or(where: str, obj: dict[str, Any], field: str, default: int) -> int:
    value = _opt_int(where, obj, field)
    return default if value is None else value


def _opt_str(where: str, obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{field} must be a string")
    return value


def _req_str(where: str, obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if _missing(value):
        raise InvalidRequest(f"{where} missing required '{field}' field")
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{field} must be a string")
    return value


def _opt_list(where: str, obj: dict[str, Any], field: str) -> list[Any]:
    value = obj.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}.{field} must be a list")
    return value


def _steps(where: str, raw: list[Any]) -> tuple[StepSpec, ...]:
    steps: list[StepSpec] = []
    seen: set[int] = set()
    for j, item in enumerate(raw):
        at = f"{where}.steps[{j}]"
        if isinstance(item, str):
            item = {"title": item}  # a bare title is what a model most often sends
        if not isinstance(item, dict):
            raise InvalidRequest(f"{at} must be an object")
        seq = _int_or(at, item, "seq", j + 1)
        if seq in seen:
            raise InvalidRequest(f"{at}.seq {seq} is used twice")
        seen.add(seq)
        steps.append(StepSpec(seq, _req_str(at, item, "title"), _opt_str(at, item, "detail")))
    return tuple(steps)


def _sop_items(where: str, raw: list[Any]) -> tuple[SopSpec, ...]:
    items: list[SopSpec] = []
    seen: set[str] = set()
    for j, item in enumerate(raw):
        at = f"{where}.sop_items[{j}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{at} must be an object")
        key = _req_str(at, item, "key")
        if key in seen:
            raise InvalidRequest(f"{at}.key '{key}' is used twice")
        seen.add(key)
        required = item.get("required", True)
        if required is None:
            required = True
        if not isinstance(required, int) or required not in (0, 1):  # bools and 0/1
            raise InvalidRequest(f"{at}.required must be a boolean")
        items.append(SopSpec(key, _req_str(at, item, "description"), int(required), _opt_str(at, item, "note")))
    return tuple(items)


def _payload(where: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where}.payload must be JSON") from None


def validate_tasks(tasks: Any) -> list[TaskSpec]:
    """Check a list of task objects and fill defaults; raises ``InvalidRequest`` on the first fault."""
    if not isinstance(tasks, list):
        raise InvalidRequest("tasks must be a list")
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        where = f"task[{i}]"
        if not isinstance(task, dict):
            raise InvalidRequest(f"{where} must be an object")
        goal = task.get("goal")
        if _missing(goal):
            raise InvalidRequest(f"{where} missing required 'goal' field")
        if not isinstance(goal, str):
            raise InvalidRequest(f"{where}.goal must be a string")
        task_id = _opt_str(where, task, "id")
        if task_id is None:
            task_id = str(uuid.uuid4())
        elif not task_id.strip():
            raise InvalidRequest(f"{where}.id must be a non-empty string")
        if task_id in seen:
            raise InvalidRequest(f"{where}.id '{task_id}' is used twice")
        seen.add(task_id)
        specs.append(
            TaskSpec(
                id=task_id,
                goal=goal,
                seq=_opt_int(where, task, "seq"),
                priority=_int_or(where, task, "priority", 0),
                payload=_payload(where, task.get("payload")),
                max_retries=_int_or(where, task, "max_retries", 3),
                parent_task_id=_opt_str(where, task, "parent_task_id"),
                steps=_steps(where, _opt_list(where, task, "steps")),
                sop_items=_sop_items(where, _opt_list(where, task, "sop_items")),
            )
        )
    return specs


def _check_against_db(conn: sqlite3.Connection, specs: list[TaskSpec]) -> None:
    batch = {spec.id for spec in specs}
    for i, spec in enumerate(specs):
        if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (spec.id,)).fetchone():
            raise Conflict(f"task[{i}].id '{spec.id}' already exists")
        parent = spec.parent_task_id
        if (
            parent is not None
            and parent not in batch
            and not conn.execute("SELECT 1 FROM tasks WHERE id = ?", (parent,)).fetchone()
        ):
            raise InvalidRequest(f"task[{i}].parent_task_id '{parent}' does not exist")


def seed_tasks(
    conn: sqlite3.Connection, tasks: list[dict[str, Any]], source: str, *, now: str | None = None
) -> list[str]:
    """Insert tasks as ``pending`` rows in one transaction; ids in input order. ``[]`` writes nothing."""
    specs = validate_tasks(tasks)
    if not specs:
        return []
    with write_transaction(conn):
        # A parent may come later in the same batch: check foreign keys at COMMIT only.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        _check_against_db(conn, specs)
        stamp = conn.execute(f"SELECT {ISO_SECONDS_SQL}", {"now": now_param(now)}).fetchone()[0]
        conn.executemany(
            "INSERT INTO tasks (id, seq, priority, goal, payload, status, created_at, updated_at,"
            " retry_count, max_retries, parent_task_id, source)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, 0, ?, ?, ?)",
            [
                (
                    s.id,
                    s.seq,
                    s.priority,
                    s.goal,
                    s.payload,
                    stamp,
                    stamp,
                    s.max_retries,
                    s.parent_task_id,
                    source,
                )
                for s in specs
            ],
        )
        conn.executemany(
            "INSERT INTO steps (id, task_id, seq, title, detail, status) VALUES (?, ?, ?, ?, ?, 'pending')",
            [(str(uuid.uuid4()), s.id, st.seq, st.title, st.detail) for s in specs for st in s.steps],
        )
        conn.executemany(
            "INSERT INTO sop_checklist (id, task_id, key, description, required, note) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (str(uuid.uuid4()), s.id, item.key, item.description, item.required, item.note)
                for s in specs
                for item in s.sop_items
            ],
        )
    return [spec.id for spec in specs]


def enqueue_task(conn: sqlite3.Connection, task: dict[str, Any], *, now: str | None = None) -> str:
    """Add one task the way seeding does, with source ``enqueue_tool``."""
    return seed_tasks(conn, [task], ENQUEUE_SOURCE, now=now)[0]
