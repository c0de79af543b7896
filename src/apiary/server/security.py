"""Who may call the API: the optional token (SPEC A 1.6) and the same-origin rule.

- The token is compared in constant time, taken from ``X-Hive-Token`` or ``Authorization: Bearer``;
  a missing or wrong one gets 401 before routing, so an unknown path leaks nothing either.
- Binding to anything but loopback without a configured token generates one on first start,
  stored in ``APIARY_HOME/api_token`` readable by its owner only, and requires it.
- A browser request from another origin (``Origin`` not this host, or ``Sec-Fetch-Site: cross-site``)
  is refused with 403: the API sends no CORS headers, so only the UI served here may use it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from apiary.server.errors import Handler

TOKEN_FILE = "api_token"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_token(home: Path) -> tuple[str, bool]:
    """The token stored under ``home``, creating it (mode 0600) if needed; True when new."""
    path = home / TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token, True


def token_middleware(token: str | None) -> web.middleware:  # type: ignore[valid-type]
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith("/api/"):
            given = request.headers.get("X-Hive-Token", "")
            auth = request.headers.get("Authorization", "")
            if not given and auth.startswith("Bearer "):
                given = auth[len("Bearer "):]
            if not hmac.compare_digest(given.encode(), expected):
                return web.json_response({"error": "unauthorized"}, status=401, headers={"Cache-Control": "no-store"})
        return await handler(request)

    return check


def _same_origin(request: web.Request) -> bool:
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None or (origin == "null" and request.method in ("GET", "HEAD")):
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


@web.middleware
async def same_origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and not _same_origin(request):
        return web.json_response({"error": "cross-origin request refused"}, status=403,
                                 headers={"Cache-Control": "no-store"})
    return await handler(request)
