"""Where things live under APIARY_HOME (SPEC B 6.1). Pure path arithmetic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    home: Path

    @property
    def queens(self) -> Path:
        return self.home / "agents" / "queens"

    def queen_dir(self, queen_id: str) -> Path:
        return self.queens / queen_id

    def queen_session_dir(self, queen_id: str, session_id: str) -> Path:
        return self.queen_dir(queen_id) / "sessions" / session_id

    @property
    def colonies(self) -> Path:
        return self.home / "colonies"

    def colony_dir(self, name: str) -> Path:
        return self.colonies / name

    def worker_sessions(self, colony: str) -> Path:
        return self.home / "agents" / colony / "sessions"

    def worker_session_dir(self, colony: str, worker_session_id: str) -> Path:
        return self.worker_sessions(colony) / worker_session_id

    def worker_conversations(self, colony: str) -> Path:
        return self.home / "agents" / colony / "worker" / "conversations"

    @property
    def database(self) -> Path:
        return self.home / "apiary.db"
