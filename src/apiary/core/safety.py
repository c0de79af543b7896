"""The safe-segment rule (SPEC A 1.3) for values that name stored things."""

from __future__ import annotations

import re

from apiary.core.errors import InvalidRequest

COLONY_NAME = re.compile(r"^[a-z0-9_]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_safe_segment(value: object) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and value != "."
        and "/" not in value
        and "\\" not in value
        and ".." not in value
        and not _CONTROL.search(value)
        and len(value) <= 255
    )


def require_safe_segment(value: object) -> str:
    if not is_safe_segment(value):
        raise InvalidRequest("Invalid path parameter")
    assert isinstance(value, str)
    return value
