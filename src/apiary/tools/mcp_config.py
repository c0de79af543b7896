"""``mcp_servers.json``: which MCP servers an owner (a queen or a colony) uses as tool sources.

Places: ``$APIARY_HOME/agents/queens/<queen_id>/mcp_servers.json`` for a queen and
``$APIARY_HOME/colonies/<name>/mcp_servers.json`` for a colony. A missing file means no servers.

    {"servers": [
      {"name": "files", "transport": "stdio", "command": "python", "args": ["server.py"],
       "env": {"KEY": "value"}, "cwd": "."},
      {"name": "web", "transport": "http", "url": "http://127.0.0.1:9000/mcp", "headers": {"X-Key": "..."}}
    ]}

Per server, optional: ``start_timeout_seconds`` (default 30) and ``call_timeout_seconds`` (default 50,
below the loop's 60 s per call, so the model gets this source's message rather than the loop's).
``transport`` may be left out when ``command`` (stdio) or ``url`` (http) says it; ``streamable-http``
is accepted for ``http``. A relative ``cwd`` and the default ``cwd`` are the folder of the file, so
``"args": ["server.py"]`` finds a script next to it. ``env`` is added to the small environment the SDK
gives a stdio server (HOME, PATH, SHELL, TERM, USER, LOGNAME): apiary's own variables (API keys)
are not passed on unless listed. Server names are ``[A-Za-z0-9_-]``, at most 32 characters, without
``__`` (it separates server and tool in the exposed tool names).

This module does not import the ``mcp`` SDK (which takes seconds to import).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CONFIG_FILE = "mcp_servers.json"
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_CALL_TIMEOUT_S = 50.0
MAX_TIMEOUT_S = 3600.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_KEYS = {"name", "transport", "command", "args", "env", "cwd", "url", "headers",
         "start_timeout_seconds", "call_timeout_seconds"}

Transport = Literal["stdio", "http"]


class McpConfigError(ValueError):
    """An ``mcp_servers.json`` that cannot be used; the message lists every problem found."""


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    name: str
    transport: Transport
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S


def queen_config_path(queen_dir: Path) -> Path:
    """``queen_dir`` is ``Layout.queen_dir(queen_id)``."""
    return queen_dir / CONFIG_FILE


def colony_config_path(colony_dir: Path) -> Path:
    return colony_dir / CONFIG_FILE


def load_mcp_config(path: Path) -> list[McpServerConfig]:
    """The servers configured in ``path``; [] when the file does not exist. Raises ``McpConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise McpConfigError(f"{path.name}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(f"{path.name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from None
    return parse_mcp_config(data, base_dir=path.parent, source=path.name)


def parse_mcp_config(data: Any, *, base_dir: Path, source: str = CONFIG_FILE) -> list[McpServerConfig]:
    """Validate the decoded JSON; ``base_dir`` anchors relative and default ``cwd``."""
    if not isinstance(data, dict) or not isinstance(data.get("servers", []), list):
        raise McpConfigError(f'{source}: expected an object {{"servers": [...]}}')
    problems: list[str] = []
    servers: list[McpServerConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(data.get("servers", [])):
        where = f"servers[{index}]"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            where += f" ({entry['name']!r})"
        errors: list[str] = []
        server = _parse_server(entry, base_dir, errors)
        if server is not None and server.name in seen:
            errors.append(f"the name {server.name!r} is used by an earlier server")
        problems += [f"{where}: {e}" for e in errors]
        if server is not None and not errors:
            seen.add(server.name)
            servers.append(server)
    if problems:
        raise McpConfigError(f"{source}: " + "; ".join(problems))
    return servers


def _parse_server(entry: Any, base_dir: Path, errors: list[str]) -> McpServerConfig | None:
    if not isinstance(entry, dict):
        errors.append("must be an object")
        return None
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        errors.append(f"unknown field(s) {', '.join(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or "__" in name:
        errors.append("'name' must be 1-32 letters, digits, '_' or '-' (starting with a letter or digit, no '__')")
        name = ""
    transport = _transport(entry, errors)
    timeouts = {key: _timeout(entry, key, default, errors) for key, default in
                (("start_timeout_seconds", DEFAULT_START_TIMEOUT_S), ("call_timeout_seconds", DEFAULT_CALL_TIMEOUT_S))}
    common: dict[str, Any] = {"name": name, "start_timeout_s": timeouts["start_timeout_seconds"],
                              "call_timeout_s": timeouts["call_timeout_seconds"]}
    if transport == "stdio":
        for key in ("url", "headers"):
            if key in entry:
                errors.append(f"'{key}' is for http servers")
        command = entry.get("command")
        if not isinstance(command, str) or not command.strip() or "\x00" in command:
            errors.append("'command' must be a non-empty string")
            command = ""
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) and "\x00" not in a for a in args):
            errors.append("'args' must be a list of strings")
            args = []
        cwd = entry.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd or "\x00" in cwd):
            errors.append("'cwd' must be a non-empty string")
            cwd = None
        return McpServerConfig(transport="stdio", command=command, args=tuple(args),
                               env=_str_map(entry, "env", errors), cwd=base_dir / (cwd or "."), **common)
    if transport == "http":
        for key in ("command", "args", "env", "cwd"):
            if key in entry:
                errors.append(f"'{key}' is for stdio servers")
        url = entry.get("url")
        if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            errors.append("'url' must be an http:// or https:// URL")
            url = ""
        return McpServerConfig(transport="http", url=url, headers=_str_map(entry, "headers", errors), **common)
    return None


def _transport(entry: dict[str, Any], errors: list[str]) -> Transport | None:
    value = entry.get("transport")
    if value is None:
        value = "stdio" if "command" in entry else "http" if "url" in entry else None
    if value in ("http", "streamable-http", "streamable_http"):
        return "http"
    if value == "stdio":
        return "stdio"
    errors.append("'transport' must be 'stdio' (with 'command') or 'http' (with 'url')")
    return None


def _timeout(entry: dict[str, Any], key: str, default: float, errors: list[str]) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
        errors.append(f"'{key}' must be a number of seconds between 0 and {MAX_TIMEOUT_S:g}")
        return default
    return float(value)


def _str_map(entry: dict[str, Any], key: str, errors: list[str]) -> dict[str, str]:
    value = entry.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        errors.append(f"'{key}' must be an object of strings")
        return {}
    return dict(value)
