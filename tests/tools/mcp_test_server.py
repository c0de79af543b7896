"""A small MCP server for the tests, on the SDK's ``MCPServer`` (``FastMCP`` before mcp 2).

``python mcp_test_server.py [MARKER]`` serves over stdio; ``python mcp_test_server.py --http PORT`` serves
streamable HTTP on 127.0.0.1:PORT at ``/mcp``. The marker argument is ignored by the server: tests pass a
unique one to find the process in /proc.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent, TextContent, ToolAnnotations

server = MCPServer("apiary-test", log_level="WARNING")

_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="  # 1x1


@server.tool(description="Add two integers.", annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Return the text unchanged.", annotations=ToolAnnotations(idempotent_hint=True))
def echo(text: str) -> str:
    return text


@server.tool(description="Sleep, then answer.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(description="Exit the server process at once.")
def crash() -> str:
    os._exit(3)


@server.tool(description="The server's process id.", annotations=ToolAnnotations(read_only_hint=True))
def pid() -> int:
    return os.getpid()


@server.tool(description="Always fails.")
def fail() -> str:
    raise ToolError("this tool always fails")


@server.tool(description="Some text and a tiny image.", structured_output=False)
def picture() -> list[TextContent | ImageContent]:
    return [TextContent(text="here is a picture"), ImageContent(data=_PNG, mime_type="image/png")]


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
