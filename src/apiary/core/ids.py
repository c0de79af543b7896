"""Typed ids and the factory that draws them (injected, so tests get stable ids)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import NewType, Protocol

SessionId = NewType("SessionId", str)
RunId = NewType("RunId", str)
ColonyId = NewType("ColonyId", str)
TaskId = NewType("TaskId", str)
WorkerId = NewType("WorkerId", str)
EventSeq = NewType("EventSeq", int)

LEGACY_RUN_ID = RunId("__legacy_run__")


class IdFactory(Protocol):
    def session_id(self, epoch: float) -> SessionId: ...
    def run_id(self) -> RunId: ...
    def hex(self, n: int) -> str: ...


class RandomIds:
    def session_id(self, epoch: float) -> SessionId:
        when = datetime.fromtimestamp(epoch).strftime("%Y%m%d_%H%M%S")
        return SessionId(f"session_{when}_{secrets.token_hex(4)}")

    def run_id(self) -> RunId:
        return RunId(secrets.token_hex(6))

    def hex(self, n: int) -> str:
        return secrets.token_hex((n + 1) // 2)[:n]


class SequentialIds:
    """Deterministic ids for tests: the same calls give the same ids on every run."""

    def __init__(self) -> None:
        self._n = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    def session_id(self, epoch: float) -> SessionId:
        when = datetime.fromtimestamp(epoch).strftime("%Y%m%d_%H%M%S")
        return SessionId(f"session_{when}_{self._next():08x}")

    def run_id(self) -> RunId:
        return RunId(f"{self._next():012x}")

    def hex(self, n: int) -> str:
        return f"{self._next():0{n}x}"[-n:]
