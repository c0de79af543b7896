"""The route table: one list of ``Route`` builds both the aiohttp router and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: dict[str, Any] | None = None              # JSON schema of the request body
    responses: dict[int, str] = field(default_factory=dict)   # success statuses; empty means just 200
    stream: bool = False                            # text/event-stream


def obj(**props: Any) -> dict[str, Any]:
    """A JSON schema object with the given properties (all optional)."""
    return {"type": "object", "properties": props}


STR: dict[str, Any] = {"type": "string"}
OBJ: dict[str, Any] = {"type": "object"}
LIST: dict[str, Any] = {"type": "array"}
INT: dict[str, Any] = {"type": "integer"}
