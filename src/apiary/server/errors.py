"""The one ApiaryError -> HTTP table, and the middlewares that render every error as JSON.

Handlers contain no try/except for request errors: they raise, and ``error_middleware`` walks
the exception's MRO over ``STATUS``. Unknown exceptions become 500 with the detail in the log only.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from apiary.core import errors

logger = logging.getLogger(__name__)

STATUS: Final[dict[type[BaseException], int]] = {
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.InvalidRequest: 400,
    errors.PayloadTooLarge: 413,
    errors.CredentialsRequired: 424,
    errors.Unavailable: 503,
    errors.ApiaryError: 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, message: str, /, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _http_error(exc: web.HTTPException, request: web.Request) -> web.StreamResponse:
    if exc.status == 413:
        return error_response(413, "Request body too large")
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        resp = error_response(405, "Method not allowed")
        if allow:
            resp.headers["Allow"] = allow
        return resp
    if exc.status == 404:
        return error_response(404, "Not found")
    if exc.status < 400:
        raise exc
    return error_response(exc.status, exc.reason or "error")


def is_disk_full(exc: BaseException | None) -> bool:
    """True when the error, or one it came from, says the disk is full."""
    seen = 0
    while exc is not None and seen < 10:
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except errors.ApiaryError as exc:
        status = status_of(exc)
        if status >= 500 and not isinstance(exc, errors.Unavailable):
            logger.error("request %s %s failed: %s", request.method, request.path, exc)
        response = error_response(status, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/"):
            raise
        response = _http_error(exc, request)
    except Exception as exc:
        if is_disk_full(exc):
            logger.error("disk full on %s %s: %s", request.method, request.path, exc)
            response = error_response(507, "Insufficient storage: the disk holding APIARY_HOME is full")
        else:
            logger.exception("unexpected error on %s %s", request.method, request.path)
            response = error_response(500, "Internal server error")
    if request.path.startswith("/api/") and not response.prepared and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response
