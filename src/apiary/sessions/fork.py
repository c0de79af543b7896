"""Colony spawn and compact-and-fork (SPEC A 2.12-2.13, B 8).

A spawn that fails removes what it created (colony folder if new, the session copy and its rows),
so no half-written colony is left. The conversation and the event log are copied inside one
database transaction each, and the folder copy skips the temporary files of atomic writes, so a
spawn sent while the queen is still answering copies a consistent snapshot (SPEC C.6).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from apiary.agent.compaction import summarise, summary_message
from apiary.core.clock import utc_iso
from apiary.core.errors import ApiaryError, InvalidRequest, NotFound, RequestError, Unavailable
from apiary.core.jsonfile import merge_json, read_json, write_json
from apiary.core.messages import is_well_formed, make_message, tool_calls_of
from apiary.core.urls import redact_url
from apiary.sessions.compaction_jobs import fork_compaction_job
from apiary.sessions.deps import SessionDeps
from apiary.sessions.files import StoredSession
from apiary.sessions.manager import SessionManager
from apiary.sessions.session import Session
from apiary.storage.sqlite import progress_db

logger = logging.getLogger(__name__)

QUEEN_ONLY_TOOLS = frozenset({
    "start_incubating_colony", "get_worker_status", "inject_message", "list_worker_questions", "reply_to_worker",
    "stop_worker", "run_parallel_workers", "set_trigger", "remove_trigger", "list_triggers", "switch_to_reviewing",
    "switch_to_independent", "list_credentials", "get_worker_health_summary", "enqueue_task"})
WORKER_BRIEF = ("You are a worker started by the queen for one task. Use your tools to do it. Call set_output "
                "when you are done; call escalate when you are stuck or when human judgement is needed.")
DEFAULT_TASK = "Continue the work from the queen's current session."
LOCK_FIELDS = ("colony_spawned", "spawned_colony_name", "spawned_colony_at")
RUNNING_CALL_RESULT = "[Tool call still running in the source session when this copy was made; its result is unknown]"


def display_name(colony_name: str) -> str:
    return colony_name.replace("_", " ").title()


# write_json's temporary files (``.<name>.<8 random chars>``): renamed away at any moment, never copied.
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "compaction_status.json" or _TEMP_FILE.match(n)}


def _copy_file(src: str, dst: str) -> None:
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        pass   # removed (or renamed over) by the live session while the folder was being copied


def _copy_dir(source: Path, target: Path) -> None:
    """Copy a live session's folder: the queen may be writing files in it at the same time (SPEC C.6)."""
    shutil.copytree(source, target, ignore=_ignore, copy_function=_copy_file)


async def copy_session(manager: SessionManager, source: Session, *, keep_events: bool) -> StoredSession:
    """A new session of the same queen holding a copy of ``source``'s folder, conversation and log."""
    deps = manager.deps
    new_id = manager.new_id()
    copy = StoredSession(new_id, source.queen_id, deps.layout.queen_session_dir(source.queen_id, new_id))
    try:
        await asyncio.to_thread(_copy_dir, source.stored.dir, copy.dir)
        deps.index.add(copy)
        await deps.stores.conversations.copy(f"queen:{source.id}", f"queen:{new_id}")
        await _close_running_calls(deps.stores.conversations, f"queen:{new_id}")
        if keep_events:
            await deps.stores.events.copy_session(source.id, new_id)
    except BaseException:
        try:
            await asyncio.shield(forget_copy(manager, copy))   # a half-made copy is never left behind
        except Exception:
            logger.exception("could not remove the half-made copy %s", new_id)
        raise
    return copy


async def _close_running_calls(conversations: Any, owner: str) -> None:
    """Tool calls the source was still running when it was copied get an error result in the copy, so
    the copy's transcript is complete on its own: every call has exactly one result (SPEC C.6)."""
    conv = await conversations.load(owner)
    messages = [m for m in conv.messages if is_well_formed(m)]
    answered = {m.get("tool_use_id") for m in messages if m["role"] == "tool"}
    next_seq = max([m["seq"] for m in messages] + list(conv.partials), default=-1) + 1
    for msg in messages:
        for call in tool_calls_of(msg):
            if call.id in answered:
                continue
            answered.add(call.id)
            await conversations.append_message(owner, make_message(
                next_seq, "tool", RUNNING_CALL_RESULT, tool_use_id=call.id, is_error=True, run_id=msg.get("run_id")))
            next_seq += 1


async def forget_copy(manager: SessionManager, copy: StoredSession | None) -> None:
    if copy is None:
        return
    deps = manager.deps
    await deps.stores.conversations.delete(f"queen:{copy.session_id}")
    await deps.stores.events.delete_session(copy.session_id)
    await asyncio.to_thread(shutil.rmtree, copy.dir, True)
    deps.index.forget(copy.session_id)


def worker_spec(session: Session, *, colony_name: str, task: str, db_path: Path | str, first_task: str | None,
                now: float) -> dict[str, Any]:
    queen_ctx = session.queen.loop.ctx if session.queen.loop else None
    config = queen_ctx.config if queen_ctx else None
    tools = [n for n in session.available_queen_tools().names() if n not in QUEEN_ONLY_TOOLS]
    data_dir = db_path.parent if isinstance(db_path, Path) else session.deps.layout.colony_dir(colony_name) / "data"
    input_data: dict[str, Any] = {"db_path": str(db_path), "colony_id": colony_name, "colony_data_dir": str(data_dir)}
    if first_task:
        input_data["task_id"] = first_task
    return {
        "name": "worker", "version": "1.0.0", "description": f"Worker clone from queen session {session.id}",
        "input_data": input_data,
        "goal": {"description": task or DEFAULT_TASK, "success_criteria": [], "constraints": []},
        "system_prompt": f"{WORKER_BRIEF}\n\nTask: {task or DEFAULT_TASK}",
        "tools": tools, "skills_catalog_prompt": "", "protocols_prompt": "", "skill_dirs": [],
        "identity_prompt": "", "memory_prompt": "", "queen_phase": session.phase, "queen_id": session.queen_id,
        "loop_config": {"max_iterations": config.max_iterations if config else 999999,
                        "max_tool_calls_per_turn": config.max_tool_calls_per_turn if config else 30,
                        "max_context_tokens": config.max_context_tokens if config else 180000,
                        "max_tool_result_chars": config.max_tool_result_chars if config else 30000},
        "spawned_from": session.id, "spawned_at": utc_iso(now),
    }


def _seed(colony_dir: Path, stale_claim_s: float, tasks: list[dict[str, Any]], task: str) -> tuple[Path, list[str]]:
    db_path = progress_db.ensure_progress_db(colony_dir, stale_claim_s=stale_claim_s)
    conn = progress_db.connect(db_path)
    try:
        if tasks:
            return db_path, progress_db.seed_tasks(conn, tasks, "queen_create")
        if task.strip():
            try:
                return db_path, progress_db.seed_tasks(conn, [{"goal": task}], "create_colony_auto")
            except ApiaryError:
                logger.exception("could not seed the task of colony %s", colony_dir.name)
        return db_path, []
    finally:
        conn.close()


async def _seed_shared(deps: SessionDeps, colony: str, colony_dir: Path, tasks: list[dict[str, Any]],
                       task: str) -> list[str]:
    queue = deps.stores.task_queue(colony, colony_dir, lease_s=deps.settings.colonies.stale_claim_s)
    try:
        if tasks:
            return await queue.enqueue(tasks, "queen_create")
        if task.strip():
            try:
                return await queue.enqueue([{"goal": task}], "create_colony_auto")
            except ApiaryError:
                logger.exception("could not seed the task of colony %s", colony)
        return []
    finally:
        await queue.close()


async def _unseed_shared(deps: SessionDeps, colony: str, colony_dir: Path, task_ids: list[str]) -> None:
    queue = deps.stores.task_queue(colony, colony_dir, lease_s=deps.settings.colonies.stale_claim_s)
    try:
        await queue.remove(task_ids)
    except Exception:
        logger.exception("could not remove the tasks seeded by a failed spawn into %s", colony)
    finally:
        await queue.close()


async def spawn_colony(manager: SessionManager, session: Session, *, colony_name: str, task: str,
                       tasks: list[dict[str, Any]]) -> dict[str, Any]:
    deps = manager.deps
    if not session.queen.is_running:
        raise Unavailable("Queen is not running in this session.")
    now = deps.clock.now()
    colony_dir = deps.layout.colony_dir(colony_name)
    is_new = not (colony_dir / "worker.json").exists()
    created_dir = not colony_dir.exists()
    # What an existing colony looked like, to put back if this spawn fails (B 8 step 11).
    previous = {} if created_dir else await asyncio.to_thread(_snapshot_files, colony_dir)
    copy: StoredSession | None = None
    db_path: Path | None = None
    task_ids: list[str] = []
    shared_ids: list[str] = []
    try:
        await asyncio.to_thread((colony_dir / "data").mkdir, parents=True, exist_ok=True)
        if deps.stores.coordination is not None:   # the queue lives in the shared database
            queue_where = redact_url(deps.settings.database_url)
            task_ids = await _seed_shared(deps, colony_name, colony_dir, tasks, task)
            shared_ids = task_ids
            seeded_db: Path | str = queue_where
        else:
            seeded_db, task_ids = await asyncio.to_thread(_seed, colony_dir, deps.settings.colonies.stale_claim_s,
                                                          tasks, task)
            db_path = seeded_db
        goal = task if task.strip() else (tasks[0]["goal"] if tasks else "")
        spec = worker_spec(session, colony_name=colony_name, task=goal, db_path=seeded_db,
                           first_task=task_ids[0] if task_ids else None, now=now)
        await asyncio.to_thread(write_json, colony_dir / "worker.json", spec)
        copy = await copy_session(manager, session, keep_events=True)
        await asyncio.to_thread(copy.merge_meta, {
            "agent_path": str(colony_dir), "agent_name": display_name(colony_name), "queen_id": session.queen_id,
            "forked_from": session.id, "colony_fork": True}, remove=LOCK_FIELDS)
        await asyncio.to_thread(_write_metadata, colony_dir, session, copy.session_id, goal, now)
        await asyncio.to_thread(_write_tools, deps.layout.queen_dir(session.queen_id), colony_dir, now)
        await asyncio.to_thread(write_json, copy.dir / "compaction_status.json",
                                {"status": "in_progress", "started_at": utc_iso(now)})
        await asyncio.to_thread(session.stored.merge_meta, {"agent_path": str(colony_dir),
                                                            "agent_name": display_name(colony_name)})
    except Exception as exc:
        await forget_copy(manager, copy)
        if created_dir:
            await asyncio.to_thread(shutil.rmtree, colony_dir, True)
        else:
            await asyncio.to_thread(_undo_in_existing_colony, colony_dir, previous, db_path, task_ids)
        if shared_ids:
            await _unseed_shared(deps, colony_name, colony_dir, shared_ids)
        if isinstance(exc, RequestError):
            raise
        raise ApiaryError(f"colony fork failed: {exc}") from exc
    result: dict[str, Any] = {
        "colony_path": str(colony_dir), "colony_name": colony_name, "queen_session_id": copy.session_id,
        "is_new": is_new, "db_path": str(db_path) if db_path is not None else str(seeded_db), "task_ids": task_ids,
        "compaction_status": "in_progress"}
    if deps.stores.coordination is not None:   # db_path names the database; this says where in it
        result["task_queue"] = {"backend": "postgresql", "database": str(seeded_db), "table": "apiary_tasks",
                                "colony": colony_name}
    # Published before the job starts, so that it always precedes the job's own done/failed event.
    await session.publish("custom", {"name": "colony_compaction_status", "colony_name": colony_name,
                                     "queen_session_id": copy.session_id, "status": "in_progress"})
    deps.tasks.spawn(fork_compaction_job(
        deps, source_id=session.id, copy=copy, colony_name=colony_name,
        worker_conversations=deps.layout.worker_conversations(colony_name), llm=session.llm,
        timeout_s=deps.settings.colonies.compaction_timeout_s), name=f"fork-compaction:{copy.session_id}")
    await session.publish("colony_created", {**result, "skill_installed": False, "skill_name": None,
                                             "skill_replaced": False, "task": goal})
    return result


_RESTORED_FILES = ("worker.json", "metadata.json", "tools.json")


def _snapshot_files(colony_dir: Path) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {}
    for name in _RESTORED_FILES:
        try:
            files[name] = (colony_dir / name).read_bytes()
        except FileNotFoundError:
            files[name] = None
    return files


def _undo_in_existing_colony(colony_dir: Path, previous: dict[str, bytes | None], db_path: Path | None,
                             task_ids: list[str]) -> None:
    """Put an existing colony back as it was before a failed spawn: its files and its queue."""
    for name, content in previous.items():
        path = colony_dir / name
        try:
            if content is None:
                path.unlink(missing_ok=True)
            elif not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)
        except OSError:
            logger.exception("could not restore %s after a failed spawn", path)
    if db_path is not None and task_ids:
        conn = progress_db.connect(db_path)
        try:
            with progress_db.write_transaction(conn):
                conn.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in task_ids])
        except Exception:
            logger.exception("could not remove the tasks seeded by a failed spawn into %s", colony_dir.name)
        finally:
            conn.close()


def _write_tools(queen_dir: Path, colony_dir: Path, now: float) -> None:
    """The colony's ``tools.json`` from the queen's ``enabled_mcp_tools`` when that is a list (B 8 step 10)."""
    queen_tools = read_json(queen_dir / "tools.json", {})
    enabled = queen_tools.get("enabled_mcp_tools") if isinstance(queen_tools, dict) else None
    if isinstance(enabled, list):
        write_json(colony_dir / "tools.json", {"enabled_mcp_tools": enabled, "updated_at": utc_iso(now)})


def _write_metadata(colony_dir: Path, session: Session, copy_id: str, task: str, now: float) -> None:
    path = colony_dir / "metadata.json"
    current = read_json(path, {})
    workers = dict(current.get("workers") or {}) if isinstance(current, dict) else {}
    workers["worker"] = {"task": task[:100], "spawned_at": utc_iso(now)}
    merge_json(path, {"colony_name": colony_dir.name, "queen_name": session.queen_id, "queen_session_id": copy_id,
                      "source_session_id": session.id,
                      "created_at": current.get("created_at", utc_iso(now)) if isinstance(current, dict)
                      else utc_iso(now), "updated_at": utc_iso(now), "workers": workers})


async def compact_and_fork(manager: SessionManager, session: Session) -> dict[str, Any]:
    deps = manager.deps
    if not session.stored.meta_path.exists():
        raise NotFound("queen session directory not found")
    if not session.queen.is_running:
        raise Unavailable("queen is not running")
    conv = await deps.stores.conversations.load(f"queen:{session.id}")
    messages = [m for m in conv.messages if is_well_formed(m)]
    if not messages:
        raise InvalidRequest("queen conversation is empty -- nothing to compact")
    try:
        summary = await summarise(session.llm, messages, preserve_user_messages=True)
    except Exception as exc:
        raise ApiaryError(f"compaction failed: {exc}") from exc
    copy: StoredSession | None = None
    try:
        copy = await copy_session(manager, session, keep_events=False)
        await deps.stores.conversations.replace(f"queen:{copy.session_id}", [summary_message(summary)],
                                                {"next_seq": 1})
        await asyncio.to_thread(copy.merge_meta, {
            "queen_id": session.queen_id, "compacted_from": session.id, "compacted_at": utc_iso(deps.clock.now()),
            "created_at": deps.clock.now(), "phase": "independent"},
            remove=(*LOCK_FIELDS, "agent_path", "agent_name", "loaded_colony", "colony_fork", "forked_from"))
    except Exception as exc:
        await forget_copy(manager, copy)
        raise ApiaryError(f"failed to fork session dir: {exc}") from exc
    try:
        await manager.create(resume_from=copy.session_id, initial_phase="independent", attach=False)
    except Exception as exc:
        await forget_copy(manager, copy)
        raise ApiaryError(f"failed to start forked session: {exc}") from exc
    return {"new_session_id": copy.session_id, "queen_id": session.queen_id, "compacted_from": session.id,
            "summary_chars": len(summary), "messages_compacted": len(messages)}
