"""The OpenAPI 3.1 document, built from the same route table that builds the router."""

from __future__ import annotations

import re
from typing import Any

from apiary import __version__
from apiary.server.routing import Route

_PARAM = re.compile(r"{([^}]+)}")
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "operationId": route.handler.__name__ + "_" + route.method.lower()}
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in _PARAM.findall(route.path)]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": route.body}}}
    media = "text/event-stream" if route.stream else "application/json"
    success = {"schema": {"type": "string"} if route.stream else {"type": "object"}}
    op["responses"] = {
        **{str(code): {"description": text, "content": {media: success}}
           for code, text in (route.responses or {200: "success"}).items()},
        "4XX": {"description": "client error", "content": {"application/json": {"schema": ERROR}}},
        "5XX": {"description": "server error", "content": {"application/json": {"schema": ERROR}}},
    }
    return op


def build_openapi(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {"openapi": "3.1.0", "info": {"title": "apiary", "version": __version__}, "paths": paths}
