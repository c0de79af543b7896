"""List prices (USD per million tokens) for well-known models, to estimate a call's cost.

Estimates only: vendors change prices and apply discounts (batch, priority tiers) we cannot see.
Unknown models cost 0.0 rather than failing: local endpoints (Ollama, vLLM) are free.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # per million uncached input tokens
    output: float  # per million output tokens
    cached_input: float | None = None  # per million cache-read tokens; None = same as input
    cache_write: float | None = None  # per million cache-creation tokens; None = same as input


def _claude(input_price: float, output_price: float) -> Price:
    # Anthropic bills cache reads at 0.1x and 5-minute cache writes at 1.25x the input price.
    return Price(input_price, output_price, input_price * 0.1, input_price * 1.25)


# Keys are matched as prefixes of the model name, longest first, so dated snapshots
# ("gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929") resolve to their family.
PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "o1": Price(15.00, 60.00, 7.50),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o4-mini": Price(1.10, 4.40, 0.275),
    # Anthropic
    "claude-opus-4": _claude(15.00, 75.00),
    "claude-opus-4-1": _claude(15.00, 75.00),
    "claude-opus-4-5": _claude(5.00, 25.00),
    "claude-sonnet-4": _claude(3.00, 15.00),
    "claude-3-7-sonnet": _claude(3.00, 15.00),
    "claude-3-5-sonnet": _claude(3.00, 15.00),
    "claude-haiku-4-5": _claude(1.00, 5.00),
    "claude-3-5-haiku": _claude(0.80, 4.00),
    "claude-3-haiku": _claude(0.25, 1.25),
}

_BOUNDARY = "-.:@"


def price_for(model: str) -> Price | None:
    """The price of ``model`` (``openai/gpt-4o`` style router prefixes are ignored), or None."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    best: str | None = None
    for key in PRICES:
        matches = name == key or (name.startswith(key) and name[len(key)] in _BOUNDARY)
        if matches and (best is None or len(key) > len(best)):
            best = key
    return PRICES[best] if best is not None else None


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cached_tokens: int = 0,
    cache_creation_tokens: int = 0,
) -> float:
    """Estimated cost of one call. ``input_tokens`` is the total prompt, cached parts included."""
    price = price_for(model)
    if price is None:
        return 0.0
    cached = max(0, min(cached_tokens, input_tokens))
    created = max(0, min(cache_creation_tokens, input_tokens - cached))
    fresh = input_tokens - cached - created
    total = (
        fresh * price.input
        + cached * (price.cached_input if price.cached_input is not None else price.input)
        + created * (price.cache_write if price.cache_write is not None else price.input)
        + output_tokens * price.output
    )
    return round(total / 1_000_000, 8)
