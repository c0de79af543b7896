"""The whole apiary exception tree. No HTTP status codes here: server/errors.py maps them.

    ApiaryError
    +-- RequestError                 the caller's fault
    |   +-- NotFound                 404
    |   +-- Conflict                 409   SessionLocked, AlreadyRunning
    |   +-- InvalidRequest           400
    |   +-- PayloadTooLarge          413
    |   +-- CredentialsRequired      424
    +-- Unavailable                  503   QueenNotRunning, NoColonyLoaded
    +-- RunError                     the run failed
        +-- ProviderError            ProviderTimeout, ProviderRateLimited, ProviderAuthError
        +-- UsageLimitExceeded, RunCancelled, StorageError
    ToolRetry                        control flow inside the loop; never reaches HTTP

An error may carry ``extra``: fields added to the JSON error body (part A of SPEC names them).
"""

from __future__ import annotations

from typing import Any


class ApiaryError(Exception):
    """Base of every error apiary raises on purpose."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = extra


class RequestError(ApiaryError):
    """The request cannot be served as asked."""


class NotFound(RequestError):
    pass


class Conflict(RequestError):
    pass


class SessionLocked(Conflict):
    pass


class AlreadyRunning(Conflict):
    """An execution is still registered on the stream after the grace period."""


class InvalidRequest(RequestError):
    pass


class PayloadTooLarge(RequestError):
    pass


class CredentialsRequired(RequestError):
    pass


class Unavailable(ApiaryError):
    pass


class QueenNotRunning(Unavailable):
    pass


class NoColonyLoaded(Unavailable):
    def __init__(self, message: str = "No colony loaded in this session", **extra: Any) -> None:
        super().__init__(message, **extra)


class RunError(ApiaryError):
    pass


class ProviderError(RunError):
    """A model provider failed. ``retryable`` says whether trying again may help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        if retryable is not None:
            self.retryable = retryable


class ProviderTimeout(ProviderError):
    retryable = True


class ProviderRateLimited(ProviderError):
    retryable = True


class ProviderUnavailable(ProviderError):
    retryable = True


class ProviderAuthError(ProviderError):
    retryable = False


class ConfigurationError(ProviderError):
    """A setting is missing or wrong (e.g. no API key); never retried."""

    retryable = False


class UsageLimitExceeded(RunError):
    pass


class RunCancelled(RunError):
    pass


class StorageError(RunError):
    pass


class ToolRetry(Exception):
    """Raised by a tool to hand the model an error result it can correct."""
