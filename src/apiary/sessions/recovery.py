"""What happens to stored state when the server starts (SPEC B 2.4, 8)."""

from __future__ import annotations

import asyncio
import logging

from apiary.core.clock import utc_iso
from apiary.core.jsonfile import read_json, write_json
from apiary.sessions.deps import SessionDeps

logger = logging.getLogger(__name__)
RESTART_ERROR = "server restarted while compaction was in progress"


def fail_stale_compactions(deps: SessionDeps) -> int:
    """Every ``compaction_status.json`` left ``in_progress`` becomes ``failed``."""
    count = 0
    for path in deps.layout.queens.glob("*/sessions/*/compaction_status.json"):
        status = read_json(path, {})
        if isinstance(status, dict) and status.get("status") == "in_progress":
            write_json(path, {"status": "failed", "completed_at": utc_iso(deps.clock.now()), "error": RESTART_ERROR})
            count += 1
    return count


def ensure_colony_queues(deps: SessionDeps) -> int:
    """SPEC B 7: ensure every colony's progress.db (schema, stale reclaim, patched worker specs) at startup."""
    from apiary.colonies.spec import find_worker_spec
    from apiary.storage.sqlite.progress_db import ensure_progress_db

    count = 0
    root = deps.layout.colonies
    for colony in sorted(root.iterdir()) if root.is_dir() else []:
        if colony.is_dir() and find_worker_spec(colony) is not None:
            try:
                ensure_progress_db(colony, stale_claim_s=deps.settings.colonies.stale_claim_s)
                count += 1
            except Exception:
                logger.exception("could not prepare the task queue of colony %s", colony.name)
    return count


async def recover_at_startup(deps: SessionDeps) -> None:
    await asyncio.to_thread(ensure_colony_queues, deps)
    failed = await asyncio.to_thread(fail_stale_compactions, deps)
    if failed:
        logger.info("marked %d interrupted compactions as failed", failed)
