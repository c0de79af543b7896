"""Goal progress (SPEC B 10): tasks done plus criteria met, over all tasks plus all criteria."""

from __future__ import annotations

from typing import Any


def is_truthy(value: Any) -> bool:
    return bool(value) and value not in ("false", "False", "0", "no")


def goal_progress(counts: dict[str, int], criteria: list[tuple[str, str]],
                  outputs: dict[str, Any]) -> dict[str, Any]:
    """The progress object; ``outputs`` maps set_output keys of worker executions to their values."""
    status = {}
    met = 0
    for cid, description in criteria:
        value = outputs.get(cid)
        ok = is_truthy(value)
        met += ok
        status[cid] = {"description": description, "met": ok,
                       "evidence": (value if isinstance(value, str) else str(value))[:200] if ok else None}
    total = counts.get("total", 0) + len(criteria)
    done = counts.get("done", 0) + met
    progress = round(done / total, 4) if total else 0.0
    return {"progress": progress, "criteria_status": status, "tasks": counts}
