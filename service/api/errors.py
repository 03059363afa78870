"""The one place where domain errors become HTTP answers.

Domain errors: ``{"detail": message, "field": field}`` with the class's status.
Request validation: FastAPI's usual 422 shape, each message prefixed with the
dotted field path (``space.lr: low (1.0) must be < high (1.0)``) and without
echoing the input back (it may hold NaN or huge values).
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from service.core.db import is_connection_error
from service.core.errors import DatabaseUnavailable, DomainError

log = logging.getLogger("hpo.server")

_DISCRIMINATORS = {"float", "int", "categorical", "function-after", "function-before"}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    parts = [p for p in parts if p not in _DISCRIMINATORS and not p.startswith("function-")]
    return ".".join(parts)


def _clean(err: dict[str, Any]) -> dict[str, Any]:
    path = field_path(err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return {
        "loc": [str(p) for p in err.get("loc", ())],
        "msg": f"{path}: {msg}" if path else msg,
        "type": str(err.get("type", "value_error")),
    }


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"Retry-After": "5"} if exc.status_code == 503 else None
    body = {"detail": exc.message, "field": exc.field}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [_clean(e) for e in exc.errors()]}, status_code=422)


#: FastAPI's answer to a body it cannot decode (e.g. invalid UTF-8); reported as a 422
#: like malformed JSON is, so every body error has the one documented shape.
_UNPARSABLE = "There was an error parsing the body"


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI schema documents at this path (Starlette's 405 names
    only the first matching route's, although another serves GET or DELETE there)."""
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = [
            (path, compile_path(path)[0], {m.upper() for m in item if m != "parameters"})
            for path, item in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    path = request.url.path
    for template, _, documented in table:
        if template == path:  # a literal path is its own resource (/workers/register)
            return sorted(documented)
    methods: set[str] = set()
    for _, pattern, documented in table:
        if pattern.match(path):
            methods |= documented
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405 and (documented := allowed_methods(request)):
        headers = {"Allow": ", ".join(documented)}
        return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE:
        err = {
            "loc": ["body"],
            "msg": "body: not valid UTF-8 JSON, or nested too deeply",
            "type": "json_invalid",
        }
        return JSONResponse({"detail": [err]}, status_code=422)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def _lost_connection(exc: BaseException) -> DBAPIError | None:
    """The connection error behind ``exc`` (Optuna wraps it in StorageInternalError)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short cause chain; bounded
        if seen is None:
            return None
        if isinstance(seen, DBAPIError) and is_connection_error(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """A database error outside our own sessions (inside Optuna's storage): 503 when the
    connection was lost (the worker retries), else a logged 500 without internals."""
    lost = _lost_connection(exc)
    if lost is not None:
        return await _domain_error(
            request, DatabaseUnavailable(f"database unavailable: {lost.orig}")
        )
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error", "field": None}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(optuna.exceptions.StorageInternalError, _storage_error)
    app.add_exception_handler(DBAPIError, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the domain errors a route can answer."""
    return {code: {"model": ErrorBody} for code in codes}


class ValidationItem(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """A domain error (``detail`` a message, ``field`` the field at fault) or, for 422,
    request validation (``detail`` a list, each message prefixed with its field path)."""

    detail: str | list[ValidationItem]
    field: str | None = None
