"""Reading request bodies and fields with the exact 400 texts of SPEC A 1.1."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from apiary.core.errors import InvalidRequest, PayloadTooLarge

_KIND = {str: "a string", dict: "an object", list: "a list", bool: "a boolean", int: "an integer"}


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body; an empty body is ``{}``."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("Request body too large") from exc
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("Invalid JSON body") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return value


def optional(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"{name} must be {_KIND[kind]}")
    return value


def required_str(body: dict[str, Any], name: str) -> str:
    value = optional(body, name, str)
    if value is None or not value.strip():
        raise InvalidRequest(f"{name} is required")
    return value
