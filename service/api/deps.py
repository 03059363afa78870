"""Typed FastAPI dependencies: the app context, request-scoped sessions, auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.core.auth import ANONYMOUS_ADMIN, Principal, authenticate, require_role
from service.core.context import AppContext

AUTH_COOKIE = "hpo_token"


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    """A request-scoped unit of work (commit on success, rollback on error)."""
    with ctx.db.session() as session:
        yield session


def _session_depends() -> Any:
    """Commit *before* the answer is sent (``scope="function"``): FastAPI >= 0.118 runs a
    yield dependency's exit code after the response by default, so a client could get
    201 for a write not yet committed (or never committed, when the commit fails)."""
    try:
        return Depends(get_session, scope="function")
    except TypeError:  # FastAPI < 0.121 has no scope; before 0.118 it exits before sending
        return Depends(get_session)


SessionDep = Annotated[Session, _session_depends()]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(AUTH_COOKIE)


def get_principal(request: Request, ctx: ContextDep) -> Principal:
    if not ctx.settings.auth:
        return ANONYMOUS_ADMIN
    with ctx.db.session() as session:
        return authenticate(session, _bearer(request))


def _role_dep(*roles: str):  # type: ignore[no-untyped-def]
    def dep(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        require_role(principal, roles)
        return principal

    return dep


#: Any valid token may read.
ViewerDep = Annotated[Principal, Depends(_role_dep("viewer", "worker"))]
#: Workers (and admins) speak the trial protocol.
WorkerDep = Annotated[Principal, Depends(_role_dep("worker"))]
#: Admins only: create/stop/delete studies, mint tokens.
AdminDep = Annotated[Principal, Depends(_role_dep())]
