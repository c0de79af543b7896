"""A worker session directory (SPEC B 6.4, 3.9): ``state.json``, ``runs.jsonl`` and checkpoint files.

Checkpoint files are written atomically, one per checkpoint; ``index.json`` lists them. The index
is rewritten at the start and end of an execution and every ``INDEX_EVERY`` checkpoints (not at
each one, which would make a long run's writes grow with the square of its length); listing
reads the files themselves, so it never depends on the index being current.

Bounded: the index lists the newest ``INDEX_KEEP`` checkpoints, in memory and in ``index.json``. A
colony session's trigger reuses one worker session for every execution, so its checkpoints never stop
coming; before the bound each execution loaded, kept and rewrote an entry for every checkpoint ever
written (the soak: 287 KB of index after 2 minutes, growing, held by the running execution). The
checkpoint files themselves are all kept and all listed.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apiary.core.clock import utc_iso
from apiary.core.jsonfile import read_json, write_json
from apiary.core.safety import is_safe_segment
from apiary.storage.base import WorkerSessionStore

INDEX_EVERY = 10
INDEX_KEEP = 1000   # checkpoints listed in index.json (the newest); older files stay, listed by the files
_CP_NUMBER = re.compile(r"_(\d+)$")
LISTED = ("checkpoint_id", "checkpoint_type", "created_at", "current_node", "is_clean", "description")


def _number(checkpoint_id: str) -> int:
    match = _CP_NUMBER.search(checkpoint_id)
    return int(match.group(1)) if match else 0


class WorkerSessionFiles:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints_dir = path / "checkpoints"
        self._counter: int | None = None
        self._since_index = 0
        self._index: dict[str, dict[str, Any]] | None = None

    @property
    def id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "state.json").is_file() or self.checkpoints_dir.is_dir()

    # -- state.json ------------------------------------------------------------------------------

    def read_state(self) -> dict[str, Any] | None:
        path = self.path / "state.json"
        if not path.exists():
            return None
        value = json.loads(path.read_text(encoding="utf-8"))   # errors reach the caller: resume answers 500
        if not isinstance(value, dict):
            raise ValueError("state.json is not an object")
        return value

    def write_state(self, state: dict[str, Any]) -> None:
        write_json(self.path / "state.json", state, durable=False)

    def append_run(self, run_id: str, event: str, now: float, error: str | None = None) -> None:
        line: dict[str, Any] = {"run_id": run_id, "event": event, "timestamp": utc_iso(now), "created_at": now}
        if error is not None:
            line["error"] = error[:500]
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "runs.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    # -- checkpoints -----------------------------------------------------------------------------

    def _next_number(self) -> int:
        if self._counter is None:
            self._counter = max((_number(p.stem) for p in self.checkpoints_dir.glob("cp_*.json")), default=0)
        self._counter += 1
        return self._counter

    def new_checkpoint_id(self, kind: str, node: str, now: float) -> str:
        when = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d_%H%M%S")
        return f"cp_{kind}_{node}_{when}_{self._next_number()}"

    def _entries(self) -> dict[str, dict[str, Any]]:
        """The index kept in memory: from ``index.json`` when it is readable, else from the files."""
        if self._index is None:
            saved = read_json(self.checkpoints_dir / "index.json")
            listed = saved.get("checkpoints") if isinstance(saved, dict) else None
            if not isinstance(listed, list) or any(not isinstance(c, dict) for c in listed):
                listed = [{k: c.get(k) for k in LISTED} for c in self.list_checkpoints()]
            listed = sorted(listed, key=lambda c: _number(str(c.get("checkpoint_id"))))[-INDEX_KEEP:]
            self._index = {str(c.get("checkpoint_id")): c for c in listed}
        return self._index

    def write_checkpoint(self, checkpoint: dict[str, Any], *, force_index: bool = False) -> bool:
        """The checkpoint file, and the index when due; True when the index was written."""
        # Compact: with an indent json.dumps runs its pure-Python encoder (~10x slower, holding the GIL
        # while the loop goes on); state.json and index.json, written rarely, stay indented.
        write_json(self.checkpoints_dir / f"{checkpoint['checkpoint_id']}.json", checkpoint, indent=None,
                   durable=False)
        entries = self._entries()
        entries[checkpoint["checkpoint_id"]] = {k: checkpoint.get(k) for k in LISTED}
        while len(entries) > INDEX_KEEP:   # numbers only grow: the oldest entry is the first inserted
            del entries[next(iter(entries))]
        self._since_index += 1
        if force_index or self._since_index >= INDEX_EVERY:
            self.write_index()
            return True
        return False

    def save(self, checkpoint: dict[str, Any], state: dict[str, Any], *, force_index: bool = False) -> None:
        """A checkpoint; ``state.json`` is written with the index, so the two always agree on
        ``latest_checkpoint_id`` (SPEC B 21) and a long run does not rewrite it at every step (a
        file renamed over another costs ~0.3 ms here: the filesystem flushes it)."""
        if self.write_checkpoint(checkpoint, force_index=force_index):
            self.write_state(state)

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """Every readable checkpoint file, oldest first."""
        found = []
        for path in self.checkpoints_dir.glob("cp_*.json"):
            raw = read_json(path)
            if isinstance(raw, dict) and raw.get("checkpoint_id") == path.stem:
                found.append(raw)
        found.sort(key=lambda c: (_number(c["checkpoint_id"]), str(c.get("created_at", ""))))
        return found

    def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        if not is_safe_segment(checkpoint_id):
            return None
        raw = read_json(self.checkpoints_dir / f"{checkpoint_id}.json")
        if not isinstance(raw, dict):
            return None
        raw.setdefault("checkpoint_id", checkpoint_id)
        return raw

    def latest_checkpoint(self) -> dict[str, Any] | None:
        listed = self.list_checkpoints()
        return listed[-1] if listed else None

    def write_index(self) -> None:
        listed = sorted(self._entries().values(), key=lambda c: _number(str(c.get("checkpoint_id"))))
        write_json(self.checkpoints_dir / "index.json", {
            "session_id": self.id,
            "checkpoints": listed,
            "latest_checkpoint_id": listed[-1]["checkpoint_id"] if listed else None,
        }, durable=False)
        self._since_index = 0


class FileWorkerSession(WorkerSessionStore):
    """The ``WorkerSessionStore`` of the embedded backends: the folder, each call in a thread.

    ``save`` (the checkpoint of every iteration) is written behind: it returns once the write has
    started, and the loop's next step runs while the thread writes (LangGraph's default "async"
    durability does the same with its checkpoints). At most one save is in flight; every call,
    the next save included, first waits for it, so writes land in order, reads see them, and a
    failed write (disk full) is raised by the next call instead of being lost. The conversation in
    the database, which a resume restores from, is stored before the step goes on in any case; a
    crash can cost at most the newest checkpoint file."""

    def __init__(self, path: Path) -> None:
        self.files = WorkerSessionFiles(path)
        self.id = self.files.id
        self._pending: asyncio.Future[None] | None = None

    async def _settle(self) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            await asyncio.shield(pending)   # a cancelled caller must not let the next write overtake it
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        await self._settle()
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def exists(self) -> bool:
        return bool(await self._call(self.files.exists))

    async def read_state(self) -> dict[str, Any] | None:
        return await self._call(self.files.read_state)  # type: ignore[no-any-return]

    async def write_state(self, state: dict[str, Any]) -> None:
        await self._call(self.files.write_state, state)

    async def append_run(self, run_id: str, event: str, now: float, error: str | None = None) -> None:
        await self._call(self.files.append_run, run_id, event, now, error)

    async def new_checkpoint_id(self, kind: str, node: str, now: float) -> str:
        if self.files._counter is not None:   # known: no need for a thread (the pending save never touches it)
            return self.files.new_checkpoint_id(kind, node, now)
        return await self._call(self.files.new_checkpoint_id, kind, node, now)  # type: ignore[no-any-return]

    async def write_checkpoint(self, checkpoint: dict[str, Any], *, force_index: bool = False) -> None:
        await self._call(self.files.write_checkpoint, checkpoint, force_index=force_index)

    async def save(self, checkpoint: dict[str, Any], state: dict[str, Any], *, force_index: bool = False) -> None:
        await self._settle()

        def write() -> None:
            self.files.save(checkpoint, state, force_index=force_index)

        self._pending = asyncio.get_running_loop().run_in_executor(None, write)

    async def end(self, state: dict[str, Any], run_id: str, event: str, now: float, error: str | None = None) -> None:
        def write() -> None:
            self.files.write_state(state)
            self.files.write_index()
            self.files.append_run(run_id, event, now, error)

        await self._call(write)

    async def list_checkpoints(self) -> list[dict[str, Any]]:
        return await self._call(self.files.list_checkpoints)  # type: ignore[no-any-return]

    async def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        return await self._call(self.files.get_checkpoint, checkpoint_id)  # type: ignore[no-any-return]

    async def latest_checkpoint(self) -> dict[str, Any] | None:
        return await self._call(self.files.latest_checkpoint)  # type: ignore[no-any-return]

    async def write_index(self) -> None:
        await self._call(self.files.write_index)


def file_worker_session_ids(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
