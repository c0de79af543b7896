"""Translate SDK and HTTP failures into ``core.errors.ProviderError`` subclasses.

The agent loop retries on ``retryable`` and shows ``message`` to people, so messages are one
short line naming the vendor, the status and the vendor's own explanation, never a traceback.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Literal

import anthropic
import httpx
import openai

from apiary.core.errors import (
    ApiaryError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

try:  # the SDKs moved to httpx2; older releases still use httpx
    import httpx2
except ImportError:  # pragma: no cover - depends on the installed SDK generation
    httpx2 = None

logger = logging.getLogger(__name__)

Vendor = Literal["openai", "anthropic"]

_NAMES: dict[str, str] = {"openai": "OpenAI", "anthropic": "Anthropic"}
_KEY_HINTS: dict[str, str] = {
    "openai": "check OPENAI_API_KEY (or APIARY_OPENAI_API_KEY)",
    "anthropic": "check ANTHROPIC_API_KEY (or APIARY_ANTHROPIC_API_KEY)",
}
_MAX_DETAIL = 300

# Vendor error ``type``/``code`` values that arrive without a usable HTTP status (mid-stream).
_RATE_LIMIT_TYPES = {"rate_limit_error", "rate_limit_exceeded", "overloaded_error", "insufficient_quota"}
_AUTH_TYPES = {"authentication_error", "permission_error", "invalid_api_key"}
_FATAL_TYPES = {"invalid_request_error", "not_found_error", "request_too_large", "context_length_exceeded"}

_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (httpx.TimeoutException,)
_REQUEST_TYPES: tuple[type[BaseException], ...] = (httpx.RequestError,)
_STATUS_TYPES: tuple[type[BaseException], ...] = (httpx.HTTPStatusError,)
if httpx2 is not None:
    _TIMEOUT_TYPES += (httpx2.TimeoutException,)
    _REQUEST_TYPES += (httpx2.RequestError,)
    _STATUS_TYPES += (httpx2.HTTPStatusError,)


class map_provider_errors:  # lower case: reads like a function at the call site
    """Context manager (``with`` or ``async with``) that re-raises provider failures as ProviderError.

    ``vendor`` names the provider for httpx errors; SDK exceptions carry their own vendor.
    Errors that are already ApiaryError, cancellation and anything unrelated pass through.
    """

    def __init__(self, vendor: Vendor | None = None) -> None:
        self.vendor = vendor

    def __enter__(self) -> map_provider_errors:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or isinstance(exc, ApiaryError):
            return False
        mapped = translate_error(exc, self.vendor)
        if mapped is None:
            return False
        logger.debug("provider error: %r -> %s", exc, mapped.message)
        # ``from None``: the SDK chain is noise for users; it stays on __context__ for debugging.
        raise mapped from None

    async def __aenter__(self) -> map_provider_errors:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self.__exit__(exc_type, exc, tb)


def translate_error(exc: BaseException, vendor: Vendor | None = None) -> ProviderError | None:
    """The ProviderError for ``exc``, or None when ``exc`` is not a provider/HTTP failure."""
    if isinstance(exc, openai.OpenAIError):
        vendor = "openai"
    elif isinstance(exc, anthropic.AnthropicError):
        vendor = "anthropic"
    name = _NAMES.get(vendor or "", "Model provider")
    hint = _KEY_HINTS.get(vendor or "", "check the provider API key setting")

    # Timeouts subclass connection errors in both SDKs, so test them first.
    if isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError, *_TIMEOUT_TYPES)):
        return ProviderTimeout(f"{name} API request timed out", provider=vendor)
    if isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError, *_REQUEST_TYPES)):
        return ProviderUnavailable(f"{name} API unreachable: {_connection_detail(exc)}", provider=vendor)
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        return _from_status(name, hint, vendor, exc.status_code, exc.body, exc.message)
    if isinstance(exc, _STATUS_TYPES):
        response: Any = exc.response  # type: ignore[attr-defined]
        return _from_status(name, hint, vendor, response.status_code, _safe_json(response), str(exc))
    if isinstance(exc, openai.APIError | anthropic.APIError):
        # No HTTP status: an error event inside a 200 stream, classified by the vendor's type.
        return _from_stream_error(name, hint, vendor, exc.body, exc.message)
    if isinstance(exc, openai.OpenAIError | anthropic.AnthropicError):
        return ProviderError(f"{name} client error: {_clip(str(exc))}", retryable=False, provider=vendor)
    return None


def _from_status(
    name: str, hint: str, vendor: str | None, status: int, body: object, fallback: str
) -> ProviderError:
    err_type, detail = _body_error(body)
    detail = detail or _strip_sdk_prefix(fallback)
    message = f"{name} API error {status}: {detail}" if detail else f"{name} API error {status}"
    extra = {"provider": vendor, "status": status}
    # A 200 here is Anthropic's in-stream ``error`` event, which the SDK tags with the stream's status.
    if status == 200 and err_type:
        return _from_stream_error(name, hint, vendor, body, fallback)
    if status in (401, 403):
        return ProviderAuthError(f"{message} ({hint})", **extra)
    if status == 429 or status == 529 or err_type == "overloaded_error":
        return ProviderRateLimited(message, **extra)
    if status == 408:
        return ProviderTimeout(message, **extra)
    if status >= 500:
        return ProviderUnavailable(message, **extra)
    return ProviderError(message, retryable=False, **extra)


def _from_stream_error(
    name: str, hint: str, vendor: str | None, body: object, fallback: str
) -> ProviderError:
    err_type, detail = _body_error(body)
    detail = detail or _strip_sdk_prefix(fallback) or "stream failed"
    message = f"{name} API error: {detail}"
    if err_type in _RATE_LIMIT_TYPES:
        return ProviderRateLimited(message, provider=vendor)
    if err_type in _AUTH_TYPES:
        return ProviderAuthError(f"{message} ({hint})", provider=vendor)
    if err_type in _FATAL_TYPES:
        return ProviderError(message, retryable=False, provider=vendor)
    # A stream that breaks mid-way is almost always a server-side hiccup: worth retrying.
    return ProviderUnavailable(message, provider=vendor)


def _body_error(body: object) -> tuple[str, str]:
    """(type or code, message) from either vendor's error JSON, or from the bare inner object."""
    if not isinstance(body, dict):
        return "", _clip(body) if isinstance(body, str) else ""
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return "", _clip(str(inner))
    err_type = inner.get("type") or inner.get("code") or ""
    code = inner.get("code")
    # OpenAI puts the specific reason in ``code`` (e.g. invalid_api_key) and a broad ``type``.
    if isinstance(code, str) and code in _RATE_LIMIT_TYPES | _AUTH_TYPES:
        err_type = code
    return str(err_type), _clip(str(inner.get("message") or ""))


def _safe_json(response: Any) -> object:
    try:
        return response.json()
    except Exception:
        return None


def _strip_sdk_prefix(message: str) -> str:
    # SDK messages look like "Error code: 429 - {...}"; the dict repr is not for humans.
    if message.startswith("Error code:"):
        return ""
    return _clip(message)


def _connection_detail(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    detail = str(cause) if cause is not None and str(cause) else str(exc)
    return _clip(detail) or type(exc).__name__


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"
