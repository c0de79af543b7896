"""Settings: the one typed settings object, and the only reader of ``os.environ``.

Precedence: keyword arguments (CLI flags), ``APIARY_*`` environment variables, the TOML file
named by ``APIARY_CONFIG`` (default ``./apiary.toml`` when it exists), then defaults.
Nested groups use ``__``: ``APIARY_SERVER__PORT=9000``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APIARY_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    home: Path = Path("~/.apiary")
    database_url: str = ""
    # LISTEN needs a session of its own: behind a pooler in transaction mode, name a direct URL here.
    database_listen_url: str = ""
    model: str = "demo"
    worker_model: str = ""
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APIARY_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APIARY_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")
    )
    llm: LLMSettings = LLMSettings()
    server: ServerSettings = ServerSettings()
    sessions: SessionSettings = SessionSettings()
    colonies: ColonySettings = ColonySettings()
    budgets: BudgetSettings = BudgetSettings()
    tools: ToolSettings = ToolSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("APIARY_CONFIG", "apiary.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()
