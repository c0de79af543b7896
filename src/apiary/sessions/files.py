"""The queen session files: ``meta.json`` (merged, never replaced) and ``summary.json``; and the
index that finds a stored session's folder by id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiary.core.jsonfile import merge_json, read_json, write_json
from apiary.core.layout import Layout


@dataclass(frozen=True)
class StoredSession:
    session_id: str
    queen_id: str
    dir: Path

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def meta(self) -> dict[str, Any]:
        value = read_json(self.meta_path, {})
        return value if isinstance(value, dict) else {}

    def merge_meta(self, updates: dict[str, Any], *, remove: tuple[str, ...] = ()) -> dict[str, Any]:
        return merge_json(self.meta_path, updates, remove=remove)

    def summary(self) -> dict[str, Any]:
        value = read_json(self.dir / "summary.json", {})
        return value if isinstance(value, dict) else {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.dir / "summary.json", summary, durable=False)


class SessionIndex:
    """Finds stored queen sessions. Scans the queens' folders once, then keeps the map current."""

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._by_id: dict[str, StoredSession] | None = None

    def _load(self) -> dict[str, StoredSession]:
        if self._by_id is None:
            found: dict[str, StoredSession] = {}
            for meta in sorted(self._layout.queens.glob("*/sessions/*/meta.json")):
                sdir = meta.parent
                found[sdir.name] = StoredSession(sdir.name, sdir.parent.parent.name, sdir)
            self._by_id = found
        return self._by_id

    def get(self, session_id: str) -> StoredSession | None:
        stored = self._load().get(session_id)
        if stored is not None and not stored.meta_path.exists():
            self.forget(session_id)
            return None
        return stored

    def create(self, queen_id: str, session_id: str) -> StoredSession:
        stored = StoredSession(session_id, queen_id, self._layout.queen_session_dir(queen_id, session_id))
        stored.dir.mkdir(parents=True, exist_ok=True)
        self._load()[session_id] = stored
        return stored

    def add(self, stored: StoredSession) -> None:
        self._load()[stored.session_id] = stored

    def forget(self, session_id: str) -> None:
        self._load().pop(session_id, None)

    def all(self) -> list[StoredSession]:
        return list(self._load().values())
