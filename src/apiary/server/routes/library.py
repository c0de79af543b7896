"""Library pages: credentials, prompts, the queens' avatars, skills and tools, and the tools and skills
of a session's colony (SPEC C.1, C.4, C.5)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from apiary.agent.builtins import ASK_USER
from apiary.core.jsonfile import read_json
from apiary.server.routes.config_routes import avatar_response
from apiary.server.routing import Route
from apiary.server.state import app_state, live_session
from apiary.sessions.manager import require_profile
from apiary.sessions.phases import PHASE_TOOLS
from apiary.tools.workspace import workspace_tools

BUILTIN_SERVER: Final = "apiary"   # the queen's built-in tools, shown as one tool server

CREDENTIAL_SPECS: Final[list[dict[str, Any]]] = [
    {"credential_name": "openai", "credential_id": "openai", "env_var": "OPENAI_API_KEY",
     "description": "OpenAI API key, for the openai:<model> models",
     "help_url": "https://platform.openai.com/api-keys",
     "api_key_instructions": "Create a key at the help URL, then start apiary with OPENAI_API_KEY (or "
                             "APIARY_OPENAI_API_KEY) set in its environment.",
     "tools": []},
    {"credential_name": "anthropic", "credential_id": "anthropic", "env_var": "ANTHROPIC_API_KEY",
     "description": "Anthropic API key, for the anthropic:<model> models",
     "help_url": "https://console.anthropic.com/settings/keys",
     "api_key_instructions": "Create a key at the help URL, then start apiary with ANTHROPIC_API_KEY (or "
                             "APIARY_ANTHROPIC_API_KEY) set in its environment.",
     "tools": []},
]


def _front_matter(text: str) -> dict[str, str]:
    """``key: value`` lines between the leading ``---`` fences of a SKILL.md."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep:
            found[key.strip()] = value.strip().strip("\"'")
    return found


def scan_skills(root: Path) -> list[dict[str, Any]]:
    """Skills under ``root/<skill>/SKILL.md``, by folder name."""
    skills = []
    for path in sorted(root.glob("*/SKILL.md")) if root.is_dir() else []:
        try:
            meta = _front_matter(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        skills.append({"name": meta.get("name") or path.parent.name, "description": meta.get("description", ""),
                       "location": str(path), "base_dir": str(path.parent)})
    return skills


def _phases_of(name: str) -> list[str]:
    return [phase for phase, names in PHASE_TOOLS.items() if name in names]


def queen_tools_json(queen_id: str, queen_dir: Path) -> dict[str, Any]:
    config = read_json(queen_dir / "tools.json")
    enabled = config.get("enabled_mcp_tools") if isinstance(config, dict) else None
    enabled = [str(n) for n in enabled] if isinstance(enabled, list) else None
    builtin = workspace_tools(allow_commands=True)
    builtin_names = {t.spec.name for t in builtin}
    lifecycle_names = sorted({n for names in PHASE_TOOLS.values() for n in names} - builtin_names)
    return {
        "queen_id": queen_id, "enabled_mcp_tools": enabled, "is_role_default": not isinstance(config, dict),
        "stale": False,
        "lifecycle": [{"name": n, "description": f"Phase tool ({', '.join(_phases_of(n))})", "editable": False}
                      for n in lifecycle_names],
        "synthetic": [{"name": ASK_USER.name, "description": ASK_USER.description, "editable": False}],
        "mcp_servers": [{"name": BUILTIN_SERVER, "tools": [
            {"name": t.spec.name, "description": t.spec.description, "input_schema": t.spec.parameters,
             "enabled": enabled is None or t.spec.name in enabled} for t in builtin]}],
    }


async def credential_specs(request: web.Request) -> web.Response:
    return web.json_response({"specs": CREDENTIAL_SPECS})


async def prompts(request: web.Request) -> web.Response:
    return web.json_response({"prompts": []})


async def queen_avatar(request: web.Request) -> web.StreamResponse:
    profile = require_profile(request.match_info["queen_id"])
    return await avatar_response(app_state(request).deps.layout.queen_dir(profile.id), "No avatar found")


async def queen_skills(request: web.Request) -> web.Response:
    profile = require_profile(request.match_info["queen_id"])
    skills = await asyncio.to_thread(scan_skills, app_state(request).deps.layout.queen_dir(profile.id) / "skills")
    return web.json_response({"queen_id": profile.id, "all_defaults_disabled": False,
                              "skills": [{"name": s["name"], "description": s["description"]} for s in skills]})


async def queen_tools(request: web.Request) -> web.Response:
    profile = require_profile(request.match_info["queen_id"])
    queen_dir = app_state(request).deps.layout.queen_dir(profile.id)
    return web.json_response(await asyncio.to_thread(queen_tools_json, profile.id, queen_dir))


async def colony_skills(request: web.Request) -> web.Response:
    session = await live_session(request)
    colony = session.colony
    skills = await asyncio.to_thread(scan_skills, colony.path / "skills") if colony is not None else []
    return web.json_response({"skills": skills})


async def colony_tools(request: web.Request) -> web.Response:
    session = await live_session(request)
    specs = session.colony.worker_tools().specs() if session.colony is not None else []
    return web.json_response({"tools": [{"name": s.name, "description": s.description} for s in specs]})


QUEEN = "/api/queen/{queen_id}"
SID = "/api/sessions/{session_id}"
ROUTES = [
    Route("GET", "/api/credentials/specs", credential_specs, "The credentials apiary's providers and tools use"),
    Route("GET", "/api/prompts", prompts, "Saved prompts"),
    Route("GET", QUEEN + "/avatar", queen_avatar, "A queen's avatar image"),
    Route("GET", QUEEN + "/skills", queen_skills, "A queen's skills"),
    Route("GET", QUEEN + "/tools", queen_tools, "A queen's built-in tools and tool servers"),
    Route("GET", SID + "/colony/skills", colony_skills, "Skills of the session's colony"),
    Route("GET", SID + "/colony/tools", colony_tools, "Tools the workers of the session's colony get"),
]
