"""Stall and doom-loop detection (SPEC B 3.6): pure functions over the recent windows."""

from __future__ import annotations

import json
from typing import Any


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(len(text) - 1)} or {text}


def similarity(a: str, b: str) -> float:
    """Character-bigram Jaccard similarity of two lower-cased texts."""
    x, y = _bigrams(a.lower()), _bigrams(b.lower())
    union = x | y
    return len(x & y) / len(union) if union else 1.0


def is_stalled(recent: list[str], window: int = 3, threshold: float = 0.85) -> bool:
    if len(recent) < window or not recent[-window]:
        return False
    last = recent[-window:]
    return all(similarity(last[i], last[i + 1]) >= threshold for i in range(window - 1))


def fingerprint(calls: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    return [[name, json.dumps(args, sort_keys=True, ensure_ascii=False)] for name, args in calls
            if name not in ("ask_user", "escalate")]


def is_doom_loop(recent: list[list[list[Any]]], window: int = 3) -> bool:
    if len(recent) < window:
        return False
    last = recent[-window:]
    return bool(last[0]) and all(f == last[0] for f in last)
