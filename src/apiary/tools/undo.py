"""The undo journal and the ``undo_changes`` tool.

Before ``write_file`` or ``edit_file`` changes a file, its previous bytes (or the fact that it did
not exist, and which folders the write created) go to ``<workspace>/.apiary/undo/<n>.bin|.json``.
``undo_changes`` pops the newest entry: it restores the old bytes, or deletes the file the tool
created together with the folders it had to create. Only the last ``keep`` entries are kept, and
previous contents above ``max_bytes`` are noted but not kept (such a change cannot be undone).

Changes made by ``run_command`` are not journaled. The journal lives on disk, so it survives a
restart of the agent and is shared by every tool instance working in the same workspace.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apiary.core.errors import ToolRetry
from apiary.tools._common import (
    INTERNAL_DIR,
    WorkspaceTool,
    atomic_write,
    make_parents,
    schema,
    workspace_root,
)
from apiary.tools.base import ToolContext, ToolOutput
from apiary.tools.paths import relative_display, resolve_in_workspace

KEEP_ENTRIES = 20
MAX_SAVED_BYTES = 10 * 1024 * 1024


class UndoJournal:
    def __init__(self, root: Path, *, keep: int = KEEP_ENTRIES, max_bytes: int = MAX_SAVED_BYTES) -> None:
        self.root = root
        self.folder = root / INTERNAL_DIR / "undo"
        self.keep = keep
        self.max_bytes = max_bytes

    def _numbers(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted({int(n.split(".")[0]) for n in names if n.endswith(".json") and n.split(".")[0].isdigit()})

    def record(self, path: Path, previous: tuple[bytes, int] | None, *, tool: str, created_dirs: list[Path]) -> Path:
        """Journal the state of ``path`` before a change; returns the entry file (for ``discard``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        numbers = self._numbers()
        n = (numbers[-1] if numbers else 0) + 1
        stored = previous is not None and len(previous[0]) <= self.max_bytes
        while True:  # exclusive create: two agents sharing a workspace must not share a number
            blob = self.folder / f"{n:06d}.bin"
            try:
                fd = os.open(blob, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                n += 1
        with os.fdopen(fd, "wb") as fh:
            if stored and previous is not None:
                fh.write(previous[0])
        entry = {
            "path": relative_display(self.root, path),
            "existed": previous is not None,
            "stored": stored,
            "size": len(previous[0]) if previous is not None else 0,
            "mode": previous[1] if previous is not None else None,
            "created_dirs": [relative_display(self.root, d) for d in created_dirs],
            "tool": tool,
            "at": time.time(),
        }
        meta = self.folder / f"{n:06d}.json"
        atomic_write(meta, json.dumps(entry, ensure_ascii=False).encode())
        self._prune()
        return meta

    def discard(self, meta: Path) -> None:
        meta.unlink(missing_ok=True)
        meta.with_suffix(".bin").unlink(missing_ok=True)

    def _prune(self) -> None:
        numbers = self._numbers()
        for n in numbers[: max(0, len(numbers) - self.keep)]:
            self.discard(self.folder / f"{n:06d}.json")

    def undo_last(self) -> str:
        """Revert the newest journaled change; raises ``ToolRetry`` when there is nothing to undo."""
        numbers = self._numbers()
        if not numbers:
            raise ToolRetry("nothing to undo: no write_file or edit_file change is recorded in this workspace")
        meta = self.folder / f"{numbers[-1]:06d}.json"
        try:
            entry = json.loads(meta.read_text(encoding="utf-8"))
            rel = str(entry["path"])
        except (ValueError, KeyError, TypeError):
            self.discard(meta)
            raise ToolRetry("the last undo entry was unreadable and has been dropped") from None
        if entry.get("existed") and not entry.get("stored"):
            self.discard(meta)  # can never succeed: drop it so older entries stay reachable
            raise ToolRetry(
                f"cannot undo the last {entry.get('tool', 'change')} of '{rel}': its previous content "
                f"({entry.get('size', 0):,} bytes) was too large to keep; the entry has been dropped"
            )
        # A failure below keeps the entry, so the model can fix the cause and try again.
        message = self._revert(entry, rel, meta.with_suffix(".bin"))
        self.discard(meta)
        remaining = len(numbers) - 1
        return f"{message} ({remaining} earlier change{'s' if remaining != 1 else ''} can still be undone)"

    def _revert(self, entry: dict[str, Any], rel: str, blob: Path) -> str:
        path = resolve_in_workspace(self.root, rel)  # checked again: the tree may have changed since
        tool = entry.get("tool", "a tool")
        if entry.get("existed"):
            data = blob.read_bytes()
            make_parents(path)
            mode = entry.get("mode")
            atomic_write(path, data, mode=mode if isinstance(mode, int) else None)
            return f"Restored '{rel}' to its content before the last {tool} ({len(data):,} bytes)"
        if path.is_dir() and not path.is_symlink():
            raise ToolRetry(f"cannot undo: '{rel}' is now a directory")
        path.unlink(missing_ok=True)
        for rel_dir in reversed(entry.get("created_dirs") or []):
            try:
                resolve_in_workspace(self.root, str(rel_dir)).rmdir()
            except (OSError, ToolRetry):
                break  # not empty any more (or gone): keep it and everything above it
        return f"Deleted '{rel}', which the last {tool} had created"


class UndoChanges(WorkspaceTool):
    name = "undo_changes"
    description = (
        "Undo the most recent change made by write_file or edit_file in the workspace: restores the "
        "file's previous content, or deletes it if that call created it. Call it again to undo older "
        "changes. Changes made with run_command cannot be undone."
    )
    parameters = schema({})

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        journal = UndoJournal(workspace_root(ctx))
        return ToolOutput(await asyncio.to_thread(journal.undo_last))
