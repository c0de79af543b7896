"""Configuration a web client reads on every page: the user profile, the model in use and the models
apiary can use (SPEC C.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from apiary.agent.state import QUEEN_LOOP
from apiary.core.config import Settings
from apiary.core.errors import NotFound
from apiary.core.jsonfile import read_json
from apiary.llm.registry import parse_model_spec
from apiary.server.routing import Route
from apiary.server.state import app_state

AVATAR_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".webp")
PROFILE_FIELDS: Final = ("displayName", "about", "theme")


def _model(id_: str, label: str, max_tokens: int, context: int, *, recommended: bool = False,
           vision: bool = True) -> dict[str, Any]:
    return {"id": id_, "label": label, "recommended": recommended, "max_tokens": max_tokens,
            "max_context_tokens": context, "supports_vision": vision}


# Model ids as the providers name them; a session uses one as "<provider>:<id>" (part A 3.2).
MODELS: Final[dict[str, list[dict[str, Any]]]] = {
    "demo": [_model("demo", "Demo (offline, no API key)", QUEEN_LOOP.max_tokens, QUEEN_LOOP.max_context_tokens,
                    recommended=True)],
    "openai": [
        _model("gpt-4.1", "GPT-4.1", 32768, 1047576, recommended=True),
        _model("gpt-4.1-mini", "GPT-4.1 mini", 32768, 1047576),
        _model("gpt-4o", "GPT-4o", 16384, 128000),
        _model("gpt-4o-mini", "GPT-4o mini", 16384, 128000),
        _model("gpt-5", "GPT-5", 128000, 400000),
    ],
    "anthropic": [
        _model("claude-sonnet-4-5", "Claude Sonnet 4.5", 64000, 200000, recommended=True),
        _model("claude-opus-4-1", "Claude Opus 4.1", 32000, 200000),
        _model("claude-haiku-4-5", "Claude Haiku 4.5", 64000, 200000),
    ],
}


def find_avatar(folder: Path) -> Path | None:
    for suffix in AVATAR_SUFFIXES:
        path = folder / f"avatar{suffix}"
        if path.is_file():
            return path
    return None


async def avatar_response(folder: Path, missing: str) -> web.StreamResponse:
    path = await asyncio.to_thread(find_avatar, folder)
    if path is None:
        raise NotFound(missing)
    return web.FileResponse(path)


def connected_providers(settings: Settings) -> list[str]:
    keys = {"openai": settings.openai_api_key, "anthropic": settings.anthropic_api_key}
    return [name for name, key in keys.items() if key is not None and key.get_secret_value().strip()]


async def profile(request: web.Request) -> web.Response:
    """The user's profile from ``$APIARY_HOME/profile.json`` when there is one; empty strings otherwise."""
    stored = await asyncio.to_thread(read_json, app_state(request).settings.home_dir / "profile.json", {})
    stored = stored if isinstance(stored, dict) else {}
    return web.json_response({name: str(stored.get(name) or "") for name in PROFILE_FIELDS})


async def profile_avatar(request: web.Request) -> web.StreamResponse:
    return await avatar_response(app_state(request).settings.home_dir, "No avatar found")


async def llm(request: web.Request) -> web.Response:
    settings = app_state(request).settings
    provider, model = parse_model_spec(settings.model)
    connected = connected_providers(settings)
    return web.json_response({
        "provider": provider, "model": model,
        "has_api_key": provider == "demo" or provider in connected,   # the demo model needs none
        # What the queen's loop asks of the model and keeps in context, whatever the model.
        "max_tokens": QUEEN_LOOP.max_tokens, "max_context_tokens": QUEEN_LOOP.max_context_tokens,
        "connected_providers": connected, "active_subscription": None, "detected_subscriptions": [],
        "subscriptions": []})


async def models(request: web.Request) -> web.Response:
    return web.json_response({"models": MODELS})


ROUTES = [
    Route("GET", "/api/config/profile", profile, "The user's profile"),
    Route("GET", "/api/config/profile/avatar", profile_avatar, "The user's avatar image"),
    Route("GET", "/api/config/llm", llm, "The model in use"),
    Route("GET", "/api/config/models", models, "The models apiary can use, by provider"),
]
