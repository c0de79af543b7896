"""Model specs (``demo``, ``openai:<model>``, ``anthropic:<model>``) to providers."""

from __future__ import annotations

from typing import Any

from apiary.core.config import Settings
from apiary.core.errors import InvalidRequest
from apiary.llm.base import LLMProvider

_SPEC_HELP = "model must be 'demo', 'openai:<model>' or 'anthropic:<model>'"
PROVIDERS = ("openai", "anthropic")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``(provider, model)``; ``demo`` gives ``("demo", "demo")``. Raises InvalidRequest otherwise."""
    text = spec.strip() if isinstance(spec, str) else ""
    if text.lower() == "demo":
        return "demo", "demo"
    provider, sep, model = text.partition(":")
    provider, model = provider.strip().lower(), model.strip()
    if not sep or provider not in PROVIDERS or not model:
        raise InvalidRequest(f"{_SPEC_HELP}, got {spec!r}")
    return provider, model


def make_llm(spec: str, settings: Settings, *, http_client: Any = None) -> LLMProvider:
    """A provider for ``spec``. Missing API keys raise ConfigurationError here, not at the first call."""
    provider, model = parse_model_spec(spec)
    if provider == "demo":
        from apiary.llm.demo import DemoLLM  # lazy: real providers must not depend on the demo

        return DemoLLM()
    if provider == "openai":
        from apiary.llm.openai_compat import OpenAIProvider

        key = settings.openai_api_key
        return OpenAIProvider(
            model,
            api_key=key.get_secret_value() if key else None,
            base_url=settings.llm.openai_base_url,
            http_client=http_client,
            timeout_s=settings.llm.timeout_s,
        )
    from apiary.llm.anthropic import AnthropicProvider

    key = settings.anthropic_api_key
    return AnthropicProvider(
        model,
        api_key=key.get_secret_value() if key else None,
        base_url=settings.llm.anthropic_base_url,
        http_client=http_client,
        timeout_s=settings.llm.timeout_s,
    )
