"""Reading request bodies and fields with the exact 400 texts of SPEC A 1.1."""

from __future__ import annotations

import json
import re
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
    except ConnectionResetError as exc:
        # The client went away in the middle of its body: nobody reads this answer, but it is a
        # client error, not a server fault to log with a traceback.
        raise InvalidRequest("Request body incomplete: the client closed the connection") from exc
    if not raw.strip():
        return {}
    try:
        # Strict UTF-8 first: json.loads(bytes) would also take UTF-16/32 and, with "surrogatepass",
        # UTF-8-encoded surrogates (b"\xed\xa0\x80"), which no store can write back.
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: nesting deeper than the interpreter's recursion limit ("[" * 100_000)
        raise InvalidRequest("Invalid JSON body") from exc
    if _ESCAPED_SURROGATE.search(raw) and _has_lone_surrogate(value):
        # "\ud800" is legal JSON text but no UTF-8 string: storing it would fail later (a 500, or a
        # queen loop that dies on the message), so the body is refused here (RFC 7493 2.1).
        raise InvalidRequest("Invalid JSON body")
    if not isinstance(value, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return value


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    """True when some string (key or value) holds a surrogate code point that UTF-8 cannot encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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
