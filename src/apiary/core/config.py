"""Settings: the one typed settings object, and the only reader of ``os.environ``.

Precedence: keyword arguments (CLI flags), ``APIARY_*`` environment variables, the TOML file
named by ``APIARY_CONFIG`` (default ``./apiary.toml`` when it exists), then defaults.
Nested groups use ``__``: ``APIARY_SERVER__PORT=9000``.

The sources are merged here rather than by pydantic-settings, whose import (dotenv, argparse, its
cloud providers, importlib.metadata) cost a tenth of ``apiary serve``'s start. The rules are the ones
it applied to this class: environment names are matched case-insensitively; a group (``server``, ...)
or a mapping may also be given whole as JSON (``APIARY_SERVER='{"port": 9000}'``), nested variables
then update it; the API keys are read from their alias names, without the prefix; an earlier source
overrides a later one key by key, and a model object given as a keyword replaces the group whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr

ENV_PREFIX = "apiary_"
NESTED = "__"


class SettingsError(ValueError):
    """A setting's source could not be read (not JSON where JSON is required, a broken TOML file)."""


class ServerSettings(BaseModel, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8787
    api_token: SecretStr | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    shutdown_timeout_s: float = 2.0
    sse_queue_size: int = 1000
    keepalive_s: float = 15.0


class SessionSettings(BaseModel, frozen=True):
    park_idle_s: float = 1800.0
    lease_s: float = Field(default=15.0, gt=0)   # PostgreSQL: how long a dead API server keeps its sessions


class ColonySettings(BaseModel, frozen=True):
    stale_claim_s: float = 900.0
    cancel_grace_s: float = 5.0
    compaction_timeout_s: float = 180.0
    resume_stale_sessions: bool = True
    resurrect_delay_s: float = 2.0
    heartbeat_s: float = 60.0
    # PostgreSQL only: executions run on worker processes that hold each one under a lease.
    embedded_workers: int = Field(default=2, ge=0)   # run by `apiary serve` itself; 0: only `apiary worker`
    worker_lease_s: float = Field(default=15.0, gt=0)   # a dead worker's executions move on after this
    worker_poll_s: float = Field(default=1.0, gt=0)   # also look for expired leases this often


class ToolSettings(BaseModel, frozen=True):
    allow_commands: bool = True   # offer run_command to the queen and the workers
    max_result_chars: int = 30000


class BudgetSettings(BaseModel, frozen=True):
    """Hard limits; None means no limit. Prices override the built-in table: model -> [input, output]
    USD per million tokens (e.g. ``{"demo": [1.0, 2.0]}``)."""

    session_tokens: int | None = None
    session_usd: float | None = None
    session_seconds: float | None = None
    colony_tokens: int | None = None
    colony_usd: float | None = None
    colony_seconds: float | None = None
    prices: dict[str, tuple[float, float]] = {}


class LLMSettings(BaseModel, frozen=True):
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    timeout_s: float = 600.0
    max_retries: int = 5
    retry_base_s: float = 2.0
    retry_max_s: float = 60.0


# Read from these names (first found wins), not from APIARY_<FIELD>; also their names in a TOML file.
ALIASES: dict[str, tuple[str, ...]] = {
    "openai_api_key": ("APIARY_OPENAI_API_KEY", "OPENAI_API_KEY"),
    "anthropic_api_key": ("APIARY_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
}


class Settings(BaseModel, frozen=True, extra="ignore", validate_default=True):
    home: Path = Path("~/.apiary")
    database_url: str = ""
    # LISTEN needs a session of its own: behind a pooler in transaction mode, name a direct URL here.
    database_listen_url: str = ""
    model: str = "demo"
    worker_model: str = ""
    openai_api_key: SecretStr | None = None     # or OPENAI_API_KEY
    anthropic_api_key: SecretStr | None = None  # or ANTHROPIC_API_KEY
    llm: LLMSettings = LLMSettings()
    server: ServerSettings = ServerSettings()
    sessions: SessionSettings = SessionSettings()
    colonies: ColonySettings = ColonySettings()
    budgets: BudgetSettings = BudgetSettings()
    tools: ToolSettings = ToolSettings()

    def __init__(self, **values: Any) -> None:
        sources = [_by_name(values), env_values(os.environ)]
        toml = Path(os.environ.get("APIARY_CONFIG", "apiary.toml"))
        if toml.is_file():
            sources.append(_by_name(_read_toml(toml)))
        merged: dict[str, Any] = {}
        for source in sources:   # highest precedence first
            merged = deep_update(source, merged)
        super().__init__(**merged)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()


def deep_update(mapping: Mapping[str, Any], *updates: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` with each of ``updates`` applied in turn, merging dicts key by key."""
    result = dict(mapping)
    for update in updates:
        for key, value in update.items():
            if key in result and isinstance(result[key], dict) and isinstance(value, dict):
                result[key] = deep_update(result[key], value)
            else:
                result[key] = value
    return result


def _by_name(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword or TOML values under field names: aliases and field names match case-insensitively, an
    alias before the field name; unknown keys are kept (and ignored by validation)."""
    out = dict(values)
    lowered: dict[str, list[str]] = {}
    for key in values:
        lowered.setdefault(key.lower(), []).append(key)
    for name in Settings.model_fields:
        candidates = [a.lower() for a in ALIASES.get(name, ())] + [name]
        matched = [key for c in candidates for key in lowered.get(c, ()) if key in out]
        if matched:
            value = values[matched[0]]
            for key in matched:
                out.pop(key, None)
            out[name] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    with path.open("rb") as fh:
        return tomllib.load(fh)


def _model_class(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_complex(annotation: Any) -> bool:
    """A value JSON-decoded from the environment: a model, a mapping, a sequence or set."""
    origin = get_origin(annotation) or annotation
    return _model_class(annotation) is not None or (
        isinstance(origin, type) and issubclass(origin, (dict, list, tuple, set, frozenset)))


def _child(annotation: Any, key: str) -> tuple[Any, bool]:
    """The annotation of ``key`` under ``annotation`` (a model's field, or a mapping's value type: then
    the flag is True and a value that is not JSON stays text), or None."""
    if annotation is dict or get_origin(annotation) is dict:
        args = get_args(annotation)
        return (args[-1] if args else None), True
    model = _model_class(annotation)
    if model is not None:
        for name, field in model.model_fields.items():
            if name.lower() == key:
                return field.annotation, False
    return None, False


def _explode(prefix: str, annotation: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """Nested variables of one group, ``<prefix>__a__b=v``, as ``{"a": {"b": v}}`` (ValueError: a
    nested value that must be JSON is not)."""
    result: dict[str, Any] = {}
    start = prefix + NESTED
    for name, raw in env.items():
        if not name.startswith(start):
            continue
        *keys, last = name[len(start):].split(NESTED)
        target: Any = result
        kind: Any = annotation
        for key in keys:
            kind = _child(kind, key)[0] if kind is not None else None
            if isinstance(target, dict):
                target = target.setdefault(key, {})
        kind, lenient = _child(kind, last) if kind is not None else (None, False)
        value: Any = raw
        if raw and kind is not None and _is_complex(kind):
            try:
                value = json.loads(raw)
            except ValueError:
                if not lenient:
                    raise
        if isinstance(target, dict):
            target[last] = value
    return result


def _field_names(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """A group's keys from the environment renamed to its field names, matched case-insensitively."""
    names = {name.lower(): name for name in model.model_fields}
    return {names.get(key.lower(), key): value for key, value in values.items()}


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The values ``environ`` sets, by field name."""
    env = {k.lower(): v for k, v in environ.items()}
    out: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        names = [a.lower() for a in ALIASES.get(name, ())] or [ENV_PREFIX + name]
        raw = next((env[n] for n in names if n in env), None)
        if not _is_complex(field.annotation):
            if raw is not None:
                out[name] = raw
            continue
        try:
            nested = _explode(names[0], field.annotation, env)
            value: Any = json.loads(raw) if raw is not None else (nested or None)
        except ValueError as exc:
            raise SettingsError(f'error parsing value for field "{name}" from source "EnvSettingsSource"') from exc
        if isinstance(value, dict) and raw is not None:
            value = deep_update(value, nested)
        model = _model_class(field.annotation)
        if isinstance(value, dict) and model is not None:
            value = _field_names(model, value)
        if value is not None:
            out[name] = value
    return out
