"""Child-process body for the multi-process claim test (a module of its own, so spawn can import it cheaply)."""

from __future__ import annotations

from typing import Any

from apiary.storage.sqlite import progress_db as pdb


def claim_until_empty(db_path: str, worker_id: str, barrier: Any, results: Any) -> None:
    """Own connection; claim, start and complete tasks until none is left; report the ids claimed."""
    conn = pdb.connect(db_path)
    claimed: list[str] = []
    try:
        barrier.wait(timeout=60)  # all processes race from the same moment
        while (task := pdb.claim(conn, worker_id)) is not None:
            claimed.append(task.id)
            if not pdb.start(conn, task.id, worker_id) or not pdb.complete(conn, task.id, worker_id):
                raise AssertionError(f"{worker_id} lost {task.id} it had claimed")
        results.put((worker_id, claimed, None))
    except BaseException as exc:
        results.put((worker_id, claimed, repr(exc)))
    finally:
        conn.close()
