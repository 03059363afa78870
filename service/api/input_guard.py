"""Refuse NUL characters anywhere in a request (path, query, JSON body) with a 422.

PostgreSQL text columns cannot hold U+0000: such a string reached the
database as a 500, and in a complete/fail request (``diagnosis``,
``reason``) it left the lease stuck in ``finishing`` for ever, because the
stored request failed again on every retry and reaper pass. SQLite accepts
NUL, so it is refused on every backend, before any write.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

NUL = "\x00"
_MAX_NODES = 200_000  # the body is at most max_body_bytes; bounded walk anyway


def _find_nul(value: Any) -> list[str] | None:
    """Location of the first string (or key) holding a NUL, else None."""
    stack: list[tuple[Any, list[str]]] = [(value, ["body"])]
    for _ in range(_MAX_NODES):
        if not stack:
            return None
        item, loc = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return loc
        elif isinstance(item, dict):
            for key, sub in item.items():
                if NUL in key:
                    return loc
                stack.append((sub, [*loc, key]))
        elif isinstance(item, list):
            stack.extend((sub, [*loc, str(i)]) for i, sub in enumerate(item))
    return None


def _refuse(loc: list[str]) -> None:
    """A validation error like any other 422 (the handler prefixes the field path)."""
    msg = "text must not contain NUL (0x00) characters"
    raise RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": "string_nul"}])


async def reject_nul(request: Request) -> None:
    """App-wide dependency: 422 naming the part of the request that holds a NUL."""
    if NUL in request.scope.get("path", ""):
        _refuse(["path"])
    for key, value in request.query_params.multi_items():
        if NUL in key or NUL in value:
            _refuse(["query", key.replace(NUL, "")])
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()  # cached: the route reads the same bytes
    if b"\\u0000" not in body:
        return
    try:
        parsed = json.loads(body)
    except ValueError:  # malformed: the route's own parsing answers 422
        return
    found = _find_nul(parsed)
    if found is not None:
        _refuse(found)


#: What the schema says of every string without a pattern of its own (and of every
#: object key): no NUL, as :func:`reject_nul` enforces.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def document_nul_rule(schema: dict[str, Any]) -> dict[str, Any]:
    """Write the NUL rule into an OpenAPI schema, in place: each string schema without a
    ``pattern`` gets :data:`NO_NUL_PATTERN`, each free-form object ``propertyNames``."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if _free_string(node):
            node["pattern"] = NO_NUL_PATTERN
        if node.get("type") == "object" and node.get("additionalProperties", False) is not False:
            node.setdefault("propertyNames", {"pattern": NO_NUL_PATTERN})
        stack.extend(v for k, v in node.items() if k not in ("example", "examples", "default"))
    return schema


def _free_string(node: dict[str, Any]) -> bool:
    """A string schema that says nothing of its characters (no pattern, enum or format)."""
    plain = "pattern" not in node and "enum" not in node and "const" not in node
    return node.get("type") == "string" and plain and "format" not in node


def install_nul_schema(app: FastAPI) -> None:
    """The app's OpenAPI schema (``/openapi.json``) says what :func:`reject_nul` does."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_nul_rule(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
