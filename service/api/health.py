"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.deps import ContextDep, SessionDep
from service.fleet.gauges import state_families
from service.trials.pool import pool_families

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable"}})
def readyz(ctx: ContextDep) -> JSONResponse:
    """The database answers."""
    if ctx.db.ping():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "database unreachable"}, status_code=503)


@router.get("/metrics", response_class=Response)
def metrics(ctx: ContextDep, session: SessionDep) -> Response:
    """Prometheus text format: request and trial counters, and state gauges (waiting and
    running trials per study, live workers) read from the database."""
    families = state_families(session, ctx.settings.worker_timeout_s) + pool_families(session)
    return Response(ctx.metrics.render(families), media_type="text/plain; version=0.0.4")
