"""MCP servers as tool sources, against a real MCP server (``mcp_test_server.py``) over stdio and HTTP.

Every server start costs one to a few seconds (the SDK's import), so the stdio lifecycle is one test.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from apiary.tools.base import ToolContext, Toolset
from apiary.tools.mcp_config import McpConfigError, McpServerConfig, load_mcp_config, parse_mcp_config
from apiary.tools.mcp_registry import McpRegistry, McpTool, describe_mcp_servers, exposed_name, toolset_with
from apiary.tools.mcp_results import flatten_result

if TYPE_CHECKING:
    from apiary.tools.mcp_servers import McpToolSource

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


def stdio(name: str = "t", marker: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "transport": "stdio", "command": sys.executable, "args": [SERVER, marker or "-"], **extra}


def config(entry: dict[str, Any]) -> McpServerConfig:
    return parse_mcp_config({"servers": [entry]}, base_dir=Path("/tmp"))[0]


def pids_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and not gone(int(entry)):
            found.append(int(entry))
    return found


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (orphans are not reaped in this container)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
async def sources() -> AsyncIterator[Callable[[McpServerConfig], McpToolSource]]:
    from apiary.tools.mcp_servers import McpToolSource  # the SDK takes seconds to import: not at collection

    made: list[McpToolSource] = []

    def make(cfg: McpServerConfig) -> McpToolSource:
        made.append(McpToolSource(cfg))
        return made[-1]

    yield make
    await asyncio.gather(*(s.aclose() for s in made))


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path)


# -- configuration ---------------------------------------------------------------------------------


def test_config_defaults_and_relative_cwd(tmp_path: Path) -> None:
    path = tmp_path / "mcp_servers.json"
    path.write_text(json.dumps({"servers": [
        {"name": "files", "command": "python", "args": ["server.py"], "cwd": "sub", "env": {"A": "1"}},
        {"name": "web", "transport": "streamable-http", "url": "http://127.0.0.1:9000/mcp",
         "call_timeout_seconds": 5}]}))
    files, web = load_mcp_config(path)
    assert (files.transport, files.command, files.args, files.cwd, files.env) == \
        ("stdio", "python", ("server.py",), tmp_path / "sub", {"A": "1"})
    assert (web.transport, web.url, web.call_timeout_s) == ("http", "http://127.0.0.1:9000/mcp", 5.0)
    assert load_mcp_config(tmp_path / "absent.json") == []


def test_config_errors_name_every_problem(tmp_path: Path) -> None:
    bad = {"servers": [
        {"name": "a__b", "command": "x"},
        {"name": "ok", "transport": "stdio"},
        {"name": "web", "transport": "http", "url": "ftp://x", "command": "y"},
        {"name": "t", "command": "x", "call_timeout_seconds": -1, "colour": "red"},
        {"name": "dup", "command": "x"}, {"name": "dup", "command": "x"},
        "nope"]}
    with pytest.raises(McpConfigError) as info:
        parse_mcp_config(bad, base_dir=tmp_path)
    text = str(info.value)
    for expected in ("servers[0] ('a__b'): 'name'", "servers[1] ('ok'): 'command'", "'url' must be an http",
                     "'command' is for stdio", "'call_timeout_seconds'", "unknown field(s) colour",
                     "servers[5] ('dup'): the name 'dup' is used", "servers[6]: must be an object"):
        assert expected in text
    (tmp_path / "mcp_servers.json").write_text("{nope")
    with pytest.raises(McpConfigError, match="not valid JSON"):
        load_mcp_config(tmp_path / "mcp_servers.json")
    registry = McpRegistry.from_file(tmp_path / "mcp_servers.json")
    assert not registry and "not valid JSON" in (registry.config_error or "")


def test_queen_and_colony_registries(tmp_path: Path) -> None:
    (tmp_path / "tools.json").write_text(json.dumps({"enabled_mcp_tools": ["t__add"], "updated_at": "x"}))
    (tmp_path / "mcp_servers.json").write_text(json.dumps({"servers": [{"name": "t", "command": "x"}]}))
    queen = McpRegistry.for_queen(tmp_path)
    assert queen.enabled_mcp_tools == ["t__add"] and [s.name for s in queen.servers] == ["t"]
    assert queen.servers[0].cwd == tmp_path
    (tmp_path / "tools.json").write_text(json.dumps({"enabled_mcp_tools": None}))
    assert McpRegistry.for_queen(tmp_path).enabled_mcp_tools is None
    empty = McpRegistry.for_colony(tmp_path / "no-colony", [])
    assert not empty and empty.loaded_tools() == [] and empty.config_error is None


def test_exposed_names() -> None:
    assert exposed_name("files", "read") == "files__read"
    assert exposed_name("files", "a.b/c") == "files__a_b_c"
    long = exposed_name("files", "x" * 100)
    assert len(long) == 64 and long != exposed_name("files", "x" * 99)


def test_flatten_results() -> None:
    from mcp.types import CallToolResult, EmbeddedResource, ResourceLink, TextContent, TextResourceContents

    result = CallToolResult(content=[
        TextContent(text="one"), ResourceLink(name="doc", uri="file:///d.txt"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///e.txt", text="inside"))])
    assert flatten_result(result).content == "one\n[resource link: doc <file:///d.txt>]\n[resource <file:///e.txt>]\ninside"
    assert flatten_result(CallToolResult(content=[], structured_content={"n": 1})).content == '{"n": 1}'
    empty_error = flatten_result(CallToolResult(content=[], is_error=True))
    assert empty_error.is_error and "without a message" in empty_error.content


# -- a real stdio server ---------------------------------------------------------------------------


async def test_lazy_start_calls_timeout_restart_and_close(sources: Any, ctx: ToolContext) -> None:
    marker = f"mcp-{uuid.uuid4().hex}"
    source = sources(config(stdio("t", marker, call_timeout_seconds=1.5)))
    await asyncio.sleep(0.2)
    assert pids_with(marker) == [] and not source.running          # lazy: nothing before first use

    infos = await source.list_tools()
    assert {i.name for i in infos} >= {"add", "echo", "slow", "crash", "pid", "fail", "picture"}
    assert len(pids_with(marker)) == 1 and source.running

    tools = {t.spec.name: t for t in (McpTool(source, i) for i in infos)}
    add = tools["t__add"]
    assert add.spec.description == "Add two integers."
    assert add.spec.parameters["properties"].keys() == {"a", "b"} and add.spec.parameters["required"] == ["a", "b"]
    assert (add.is_idempotent, add.is_concurrency_safe) == (True, True)            # readOnlyHint
    assert (tools["t__echo"].is_idempotent, tools["t__echo"].is_concurrency_safe) == (True, False)
    assert (tools["t__crash"].is_idempotent, tools["t__crash"].is_concurrency_safe) == (False, False)

    assert (await add.call({"a": 2, "b": 3}, ctx)).content == "5"
    assert (await tools["t__echo"].call({"text": "héllo"}, ctx)).content == "héllo"
    picture = await tools["t__picture"].call({}, ctx)
    assert picture.content == "here is a picture\n[image content: image/png, 70 bytes]" and not picture.is_error
    failed = await tools["t__fail"].call({}, ctx)
    assert failed.is_error and "this tool always fails" in failed.content
    bad_args = await add.call({"a": "x"}, ctx)
    assert bad_args.is_error and "validation error" in bad_args.content
    unknown = await source.call_tool("nope", {})
    assert unknown.is_error and "nope" in unknown.content

    started = time.monotonic()
    slow = await tools["t__slow"].call({"seconds": 30}, ctx)
    assert slow.is_error and "'t' timed out after 1.5s calling 'slow'" in slow.content
    assert time.monotonic() - started < 5
    assert (await add.call({"a": 1, "b": 1}, ctx)).content == "2"   # the server survives a timed-out call
    with pytest.raises(TimeoutError):                                   # as the loop's own timeout does
        await asyncio.wait_for(tools["t__slow"].call({"seconds": 30}, ctx), 0.3)
    sums = await asyncio.gather(*(add.call({"a": n, "b": n}, ctx) for n in range(5)))   # concurrent calls
    assert [s.content for s in sums] == ["0", "2", "4", "6", "8"]
    assert source.starts == 1

    # Restart after a crash (one test with the above: every server start costs seconds).
    first = int((await source.call_tool("pid", {})).content)
    crashed = await tools["t__crash"].call({}, ctx)
    assert crashed.is_error and "'t' closed the connection during the call to 'crash'" in crashed.content
    assert "outcome is unknown" in crashed.content                     # not idempotent: not run again
    assert await wait_gone(first) and not source.running
    second = int((await source.call_tool("pid", {})).content)         # finds it dead: restarts it once
    assert second != first and source.starts == 2 and source.running
    assert (await add.call({"a": 20, "b": 22}, ctx)).content == "42"

    await source.aclose()
    assert await wait_gone(second) and pids_with(marker) == []
    after = await add.call({"a": 1, "b": 1}, ctx)
    assert after.is_error and "'t' is closed" in after.content


async def test_missing_command_is_a_clear_error(sources: Any, tmp_path: Path) -> None:
    source = sources(config({"name": "ghost", "command": "/nonexistent/mcp-server", "start_timeout_seconds": 5}))
    started = time.monotonic()
    out = await source.call_tool("anything", {})
    assert out.is_error
    assert out.content == "MCP server 'ghost' failed to start: command not found: /nonexistent/mcp-server"
    assert time.monotonic() - started < 5
    await source.call_tool("anything", {})                           # second failure: backoff starts
    third = await source.call_tool("anything", {})
    assert third.is_error and "not retried for another" in third.content and source.starts == 2

    ghost = {"name": "ghost", "command": "/nonexistent/x"}
    (tmp_path / "mcp_servers.json").write_text(json.dumps({"servers": [ghost, {**ghost, "name": "nowhere",
                                                                                "cwd": "missing"}]}))
    described = await describe_mcp_servers(tmp_path / "mcp_servers.json", None)
    assert described == [
        {"name": "ghost", "tools": [],
         "error": "MCP server 'ghost' failed to start: command not found: /nonexistent/x"},
        {"name": "nowhere", "tools": [], "error": f"MCP server 'nowhere' failed to start: its working directory "
                                                  f"{tmp_path / 'missing'} does not exist"}]


async def test_silent_server_times_out_and_leaves_nothing(sources: Any) -> None:
    marker = f"mcp-{uuid.uuid4().hex}"
    source = sources(config({"name": "mute", "command": sys.executable,
                             "args": ["-c", "import time; time.sleep(60)", marker], "start_timeout_seconds": 1}))
    started = time.monotonic()
    out = await source.call_tool("x", {})
    assert out.is_error and out.content == "MCP server 'mute' failed to start: no MCP handshake within 1s"
    assert time.monotonic() - started < 3
    await source.aclose()
    assert pids_with(marker) == []


async def test_registry_allowlist_and_describe(tmp_path: Path, ctx: ToolContext) -> None:
    marker = f"mcp-{uuid.uuid4().hex}"
    (tmp_path / "mcp_servers.json").write_text(json.dumps({"servers": [
        {"name": "t", "command": sys.executable, "args": ["mcp_test_server.py", marker],
         "cwd": str(Path(SERVER).parent)},
        {"name": "ghost", "command": "/nonexistent/x"}]}))
    allow = ["t__add", "t__echo", "read_file"]
    registry = McpRegistry.from_file(tmp_path / "mcp_servers.json", enabled_mcp_tools=allow)
    try:
        assert registry.loaded_tools() == [] and pids_with(marker) == []   # nothing started yet
        with pytest.raises(TimeoutError):       # a caller that gives up does not stop the start
            await asyncio.wait_for(registry.tools(), 0.05)
        assert sorted(t.spec.name for t in await registry.tools()) == ["t__add", "t__echo"]
        registry.enabled_mcp_tools = []
        assert registry.loaded_tools() == []
        registry.enabled_mcp_tools = None
        assert len(registry.loaded_tools()) == 7
        from apiary.tools.workspace import workspace_tools

        merged = toolset_with(Toolset(workspace_tools()), registry.loaded_tools())
        assert "read_file" in merged and "t__crash" in merged and len(merged) == len(workspace_tools()) + 7
        registry.enabled_mcp_tools = ["t__pid"]
        (pid_tool,) = registry.loaded_tools()
        pid = int((await pid_tool.call({}, ctx)).content)

        assert registry.source("t").starts == 1
        described = await registry.describe()
        assert [d["name"] for d in described] == ["t", "ghost"]
        enabled = {t["name"]: t["enabled"] for t in described[0]["tools"]}
        assert enabled["t__pid"] is True and enabled["t__add"] is False and len(enabled) == 7
        assert described[0]["tools"][0].keys() >= {"name", "description", "enabled"}
        assert described[1]["tools"] == [] and "command not found" in described[1]["error"]
    finally:
        await registry.aclose()
    assert await wait_gone(pid) and pids_with(marker) == []


def test_no_config_means_no_sdk_import(tmp_path: Path) -> None:
    code = ("import sys, asyncio; from pathlib import Path; from apiary.tools.mcp_registry import McpRegistry\n"
            f"r = McpRegistry.from_file(Path({str(tmp_path / 'none.json')!r}))\n"
            "print(asyncio.run(r.tools()), 'mcp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["[]", "False"]


# -- streamable HTTP -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_streamable_http(sources: Any) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(sys.executable, SERVER, "--http", str(port),
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.returncode is None, "HTTP test server did not start"
                await asyncio.sleep(0.1)
        source = sources(config({"name": "web", "transport": "http", "url": f"http://127.0.0.1:{port}/mcp"}))
        assert "add" in {i.name for i in await source.list_tools()}
        assert (await source.call_tool("add", {"a": 40, "b": 2})).content == "42"
        assert int((await source.call_tool("pid", {})).content) == server.pid
        await source.aclose()
    finally:
        server.kill()
        await asyncio.wait_for(server.wait(), 10)
