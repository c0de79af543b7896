"""map_provider_errors on plain httpx failures and on things it must leave alone."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from apiary.core.errors import (
    InvalidRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from apiary.llm._errors import map_provider_errors

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def test_httpx_timeout_is_provider_timeout() -> None:
    with pytest.raises(ProviderTimeout) as info, map_provider_errors("openai"):
        raise httpx.ReadTimeout("read timed out", request=REQUEST)
    assert info.value.message == "OpenAI API request timed out"


def test_httpx_connect_error_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable) as info, map_provider_errors("anthropic"):
        raise httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST)
    assert info.value.message == "Anthropic API unreachable: [Errno 111] Connection refused"
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("status", "error_class", "retryable"),
    [(429, ProviderRateLimited, True), (502, ProviderUnavailable, True), (422, ProviderError, False)],
)
def test_httpx_status_errors(status: int, error_class: type[ProviderError], retryable: bool) -> None:
    response = httpx.Response(status, json={"error": {"message": "nope", "type": "x"}}, request=REQUEST)
    with pytest.raises(ProviderError) as info, map_provider_errors("openai"):
        response.raise_for_status()
    assert type(info.value) is error_class
    assert info.value.retryable is retryable
    assert info.value.message == f"OpenAI API error {status}: nope"


def test_long_vendor_messages_are_clipped_to_one_line() -> None:
    response = httpx.Response(400, json={"error": {"message": "bad\n" * 500}}, request=REQUEST)
    with pytest.raises(ProviderError) as info, map_provider_errors("openai"):
        response.raise_for_status()
    assert "\n" not in info.value.message
    assert len(info.value.message) < 400


def test_unrelated_and_apiary_errors_pass_through() -> None:
    with pytest.raises(KeyError), map_provider_errors("openai"):
        raise KeyError("x")
    with pytest.raises(InvalidRequest), map_provider_errors("openai"):
        raise InvalidRequest("mine")


async def test_async_with_and_cancellation() -> None:
    with pytest.raises(ProviderTimeout):
        async with map_provider_errors("openai"):
            raise httpx.PoolTimeout("pool", request=REQUEST)
    with pytest.raises(asyncio.CancelledError), map_provider_errors("openai"):
        raise asyncio.CancelledError
