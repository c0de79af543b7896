"""Flattening an MCP ``CallToolResult`` to the text a ``ToolOutput`` carries.

Text blocks are joined with newlines; other blocks are described in one bracketed line (an image
or audio clip by type and size, a resource link by name and URI, an embedded resource by URI with
its text when it has some). When there are no content blocks, the structured result is shown as
JSON. ``is_error`` is passed through.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from apiary.tools.base import ToolOutput

if TYPE_CHECKING:
    from mcp.types import CallToolResult


def flatten_result(result: CallToolResult) -> ToolOutput:
    parts = [_describe(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if not text:
        text = "(the tool reported an error without a message)" if result.is_error else "(no output)"
    return ToolOutput(text, is_error=bool(result.is_error))


def _describe(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} content: {block.mime_type}, {_size(block.data)}]"
    if kind == "resource_link":
        about = f" - {block.description}" if getattr(block, "description", None) else ""
        return f"[resource link: {block.name} <{block.uri}>{about}]"
    if kind == "resource":
        res = block.resource
        if isinstance(getattr(res, "text", None), str):
            return f"[resource <{res.uri}>]\n{res.text}"
        mime = getattr(res, "mime_type", None) or "binary"
        return f"[resource <{res.uri}>: {mime}, {_size(getattr(res, 'blob', ''))}]"
    return f"[{kind or 'unknown'} content]"


def _size(b64: str) -> str:
    size = len(b64) * 3 // 4 - b64.count("=", -2)
    return f"{size} bytes"
