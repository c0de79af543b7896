"""Compaction of a stored queen conversation in place, and the colony fork's background job (B 8)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from apiary.agent.compaction import summarise, summary_message
from apiary.core.clock import utc_iso
from apiary.core.events import Event
from apiary.core.jsonfile import write_json
from apiary.core.messages import is_well_formed
from apiary.sessions.deps import SessionDeps
from apiary.sessions.files import StoredSession

logger = logging.getLogger(__name__)


async def compact_in_place(deps: SessionDeps, owner: str, llm: Any, *, inherited_from: str | None = None,
                           max_context_tokens: int = 180_000) -> tuple[int, int]:
    """Replace a conversation by one summary message; returns (messages compacted, summary chars)."""
    conv = await deps.stores.conversations.load(owner)
    messages = [m for m in conv.messages if is_well_formed(m)]
    if not messages:
        return 0, 0
    summary = await summarise(llm, messages, max_context_tokens=max_context_tokens, preserve_user_messages=True)
    await deps.stores.conversations.replace(owner, [summary_message(summary, inherited_from=inherited_from)],
                                            {"next_seq": 1})
    return len(messages), len(summary)


def write_worker_conversations(target: Path, conv: Any) -> None:
    """The worker's copy of the inherited conversation, as files (SPEC B 6.1)."""
    parts = target / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for old in parts.glob("*.json"):
        old.unlink()
    for msg in conv.messages:
        write_json(parts / f"{msg['seq']:010d}.json", msg, durable=False)
    write_json(target / "meta.json", conv.meta or {}, durable=False)
    write_json(target / "cursor.json", conv.cursor or {"next_seq": len(conv.messages)}, durable=False)


async def fork_compaction_job(deps: SessionDeps, *, source_id: str, copy: StoredSession, colony_name: str,
                              worker_conversations: Path, llm: Any, timeout_s: float) -> None:
    """Compact the copy, append the fork marker, copy to the worker, then mark done or failed."""
    owner = f"queen:{copy.session_id}"
    status_path = copy.dir / "compaction_status.json"

    async def announce(status: str) -> None:
        await deps.bus.publish(source_id, Event(type="custom", stream_id="queen", node_id="queen",
                                                execution_id=source_id, data={
                                                    "name": "colony_compaction_status", "colony_name": colony_name,
                                                    "queen_session_id": copy.session_id, "status": status}))

    final: dict[str, Any]
    try:
        async with asyncio.timeout(timeout_s):
            count, chars = await compact_in_place(deps, owner, llm, inherited_from=source_id)
        if count:
            conv = await deps.stores.conversations.load(owner)
            await deps.stores.events.append(copy.session_id, deps.bus.stamp(Event(
                type="colony_fork_marker", stream_id="queen", data={
                    "parent_session_id": source_id, "fork_time": utc_iso(deps.clock.now()),
                    "summary_preview": str(conv.messages[0]["content"])[:240], "inherited_message_count": count})))
        final = {"status": "done", "completed_at": utc_iso(deps.clock.now()), "messages_compacted": count,
                 "summary_chars": chars}
    except TimeoutError:
        final = {"status": "failed", "completed_at": utc_iso(deps.clock.now()),
                 "error": f"compaction timed out after {timeout_s:g}s (falling back to raw transcript)"}
    except Exception as exc:
        logger.exception("fork compaction of %s failed", copy.session_id)
        final = {"status": "failed", "completed_at": utc_iso(deps.clock.now()), "error": str(exc)[:500]}
    try:
        conv = await deps.stores.conversations.load(owner)
        await asyncio.to_thread(write_worker_conversations, worker_conversations, conv)
    finally:
        await asyncio.to_thread(write_json, status_path, final)
        await announce(final["status"])
