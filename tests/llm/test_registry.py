"""Model specs, the provider factory and the price table."""

from __future__ import annotations

import pytest

from apiary.core.config import LLMSettings, Settings
from apiary.core.errors import ConfigurationError, InvalidRequest
from apiary.llm.anthropic import AnthropicProvider
from apiary.llm.openai_compat import OpenAIProvider
from apiary.llm.pricing import cost_usd, price_for
from apiary.llm.registry import make_llm, parse_model_spec


@pytest.fixture(autouse=True)
def _no_keys_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "APIARY_OPENAI_API_KEY", "ANTHROPIC_API_KEY", "APIARY_ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("demo", ("demo", "demo")),
        ("openai:gpt-4o", ("openai", "gpt-4o")),
        ("anthropic:claude-sonnet-4-5", ("anthropic", "claude-sonnet-4-5")),
        (" OpenAI:gpt-4o-mini ", ("openai", "gpt-4o-mini")),
        ("openai:qwen2.5:7b", ("openai", "qwen2.5:7b")),  # Ollama tags keep their colon
    ],
)
def test_parse_model_spec(spec: str, expected: tuple[str, str]) -> None:
    assert parse_model_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "gpt-4o", "openai:", "google:gemini-pro", "demo:x", ":gpt-4o"])
def test_parse_model_spec_rejects(spec: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_model_spec(spec)
    assert info.value.message.startswith("model must be 'demo', 'openai:<model>' or 'anthropic:<model>'")


async def test_make_llm_builds_providers_from_settings() -> None:
    settings = Settings(openai_api_key="sk-o", anthropic_api_key="sk-a", llm=LLMSettings(timeout_s=30))
    openai_llm = make_llm("openai:gpt-4o", settings)
    anthropic_llm = make_llm("anthropic:claude-haiku-4-5", settings)
    assert isinstance(openai_llm, OpenAIProvider)
    assert openai_llm.model == "gpt-4o"
    assert isinstance(anthropic_llm, AnthropicProvider)
    assert anthropic_llm.model == "claude-haiku-4-5"
    await openai_llm.aclose()
    await anthropic_llm.aclose()


def test_make_llm_missing_keys() -> None:
    settings = Settings()
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        make_llm("openai:gpt-4o", settings)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        make_llm("anthropic:claude-sonnet-4-5", settings)


async def test_make_llm_local_openai_endpoint_needs_no_key() -> None:
    settings = Settings(llm=LLMSettings(openai_base_url="http://127.0.0.1:11434/v1"))
    llm = make_llm("openai:llama3.1", settings)
    assert llm.model == "llama3.1"
    await llm.aclose()


def test_make_llm_demo() -> None:
    llm = make_llm("demo", Settings())
    assert llm.model == "demo"


def test_prices() -> None:
    assert cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.50)
    assert cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)  # longest prefix
    assert cost_usd("claude-sonnet-4-5-20250929", 1_000_000, 1_000_000) == pytest.approx(18.0)
    assert cost_usd("openai/gpt-4o", 1_000_000, 0) == pytest.approx(2.50)  # router-style name
    assert cost_usd("llama3.1:8b", 10_000, 10_000) == 0.0
    assert price_for("gpt-4oo") is None  # a prefix must end at a name boundary
    # Cache reads are cheaper; Anthropic cache writes dearer.
    assert cost_usd("claude-sonnet-4", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(0.30)
    assert cost_usd("claude-sonnet-4", 1_000_000, 0, cache_creation_tokens=1_000_000) == pytest.approx(3.75)
