"""Time, injected: nothing below the CLI reads the wall clock directly."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_777_627_812.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


def utc_iso(epoch: float) -> str:
    """UTC ISO-8601 with offset, microseconds kept."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def utc_iso_seconds(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(microsecond=0).isoformat()


def stamp(epoch: float) -> str:
    """Local time as ``[YYYY-MM-DD HH:MM TZ]`` for messages shown to the model."""
    local = datetime.fromtimestamp(epoch).astimezone()
    return "[" + local.strftime("%Y-%m-%d %H:%M %Z") + "]"
