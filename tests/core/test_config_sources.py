"""Settings merges its sources itself (no pydantic-settings at start-up): the same values, and the same
errors, as the pydantic-settings class it replaced, kept here as the reference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from apiary.core import config
from apiary.core.config import LLMSettings, Settings, SettingsError


class Reference(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APIARY_", env_nested_delimiter="__", frozen=True, extra="ignore")

    home: Path = Path("~/.apiary")
    database_url: str = ""
    database_listen_url: str = ""
    model: str = "demo"
    worker_model: str = ""
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APIARY_OPENAI_API_KEY", "OPENAI_API_KEY"))
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APIARY_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"))
    llm: config.LLMSettings = config.LLMSettings()
    server: config.ServerSettings = config.ServerSettings()
    sessions: config.SessionSettings = config.SessionSettings()
    colonies: config.ColonySettings = config.ColonySettings()
    budgets: config.BudgetSettings = config.BudgetSettings()
    tools: config.ToolSettings = config.ToolSettings()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("APIARY_CONFIG", "apiary.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def outcome(cls: Any, kwargs: dict[str, Any]) -> Any:
    try:
        s = cls(**kwargs)
    except SettingsError as exc:   # pydantic-settings' own SettingsError is a ValueError too
        return ("SettingsError", str(exc))
    except ValidationError as exc:
        return ("ValidationError", [(e["loc"], e["type"]) for e in exc.errors()])
    except ValueError as exc:
        return (type(exc).__name__, str(exc))
    dump = s.model_dump(mode="json")
    for key in ("openai_api_key", "anthropic_api_key"):
        secret = getattr(s, key)
        dump[key] = secret.get_secret_value() if secret is not None else None
    dump["server"]["api_token"] = s.server.api_token.get_secret_value() if s.server.api_token else None
    return dump


CASES: list[tuple[dict[str, str], str | None, dict[str, Any]]] = [
    ({}, None, {}),
    ({}, None, {"openai_api_key": "sk-o", "anthropic_api_key": "sk-a", "llm": LLMSettings(timeout_s=30)}),
    ({}, None, {"APIARY_OPENAI_API_KEY": "sk-x", "foo": 1}),
    ({}, None, {"MODEL": "up", "SERVER": {"PORT": 3}}),
    ({}, None, {"OPENAI_API_KEY": "a", "openai_api_key": "b"}),
    ({"OPENAI_API_KEY": "a", "apiary_openai_api_key": "b", "ANTHROPIC_API_KEY": "c"}, None, {}),
    ({"APIARY_OPENAI_API_KEY": "b"}, None, {"openai_api_key": "k"}),
    ({"apiary_model": "m1", "APIARY_SERVER__port": "9", "APIARY_SERVER__API_TOKEN": "t"}, None, {}),
    ({"APIARY_SERVER": '{"PORT": 5, "host": "h"}', "APIARY_SERVER__PORT": "6"}, None, {}),
    ({"APIARY_SERVER": '{"PORT": 5, "host": "h"}'}, None, {}),
    ({"APIARY_SERVER": "nope"}, None, {}),
    ({"APIARY_SERVER": ""}, None, {}),
    ({"APIARY_LLM": "[1]"}, None, {}),
    ({"APIARY_BUDGETS__PRICES": '{"demo": [1, 2]}', "APIARY_BUDGETS__PRICES__x": "[3,4]"}, None, {}),
    ({"APIARY_BUDGETS__PRICES": "zz"}, None, {}),
    ({"APIARY_BUDGETS__PRICES__x": "zz"}, None, {}),
    ({"APIARY_BUDGETS__SESSION_TOKENS": "100", "APIARY_BUDGETS__SESSION_USD": ""}, None, {}),
    ({"APIARY_SERVER__PORT": "6", "APIARY_SERVER__HOST": "e"}, None, {"server": {"port": 7}}),
    ({"APIARY_LLM__TIMEOUT_S": "6"}, None, {"llm": {"max_retries": 1}}),
    ({"APIARY_LLM__TIMEOUT_S": "6"}, None, {"llm": LLMSettings(max_retries=1)}),
    ({"APIARY_MODEL": "", "APIARY_SERVER__HOST": ""}, None, {}),
    ({"APIARY_SERVER__PORT": ""}, None, {}),
    ({"APIARY_SERVER__NOPE": "1", "APIARY_NOPE": "x", "APIARY_SERVER__PORT__X": "1"}, None, {}),
    ({"APIARY_SESSIONS__LEASE_S": "0", "APIARY_COLONIES__EMBEDDED_WORKERS": "3"}, None, {}),
    ({"APIARY_HOME": "~/x", "APIARY_TOOLS__ALLOW_COMMANDS": "false"}, None, {"home": "/tmp/y"}),
    ({"APIARY_SERVER__PORT": "6"}, 'model = "t"\nopenai_api_key = "tk"\n[server]\nport = 1\nhost = "th"\n', {}),
    ({}, 'OPENAI_API_KEY = "tk2"\nMODEL = "up"\n[SERVER]\nPORT = 4\n[budgets.prices]\ndemo = [1, 2]\n', {}),
    ({"APIARY_MODEL": "env"}, 'model = "toml"\n[llm]\nmax_retries = 2\n', {"model": "kw"}),
    ({}, "model = \n", {}),
]


@pytest.mark.parametrize(("env", "toml", "kwargs"), CASES)
def test_same_as_pydantic_settings(env: dict[str, str], toml: str | None, kwargs: dict[str, Any],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APIARY_") or name.upper() in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if toml is not None:
        (tmp_path / "apiary.toml").write_text(toml)
    assert outcome(Settings, kwargs) == outcome(Reference, kwargs)


def test_model_copy_keeps_settings() -> None:
    settings = Settings(home="/tmp/x")
    copied = settings.model_copy(update={"model": "openai:gpt-4o"})
    assert copied.model == "openai:gpt-4o" and copied.home_dir == Path("/tmp/x")
    with pytest.raises(ValidationError):
        settings.model = "other"   # type: ignore[misc]
