"""Worker registry: registration (worker token) and listing (any token)."""

from __future__ import annotations

from fastapi import APIRouter

from hpo.protocol import WorkerInfo, WorkerRegistration
from service.api.deps import ContextDep, SessionDep, ViewerDep, WorkerDep
from service.api.errors import error_responses
from service.fleet import registry

router = APIRouter(prefix="/workers", tags=["workers"], responses=error_responses(401, 403))


@router.post("/register", status_code=201, response_model=WorkerInfo)
def register(
    body: WorkerRegistration, session: SessionDep, ctx: ContextDep, _: WorkerDep
) -> WorkerInfo:
    """Register a worker process; the answer carries its ``worker_id``."""
    timeout = ctx.settings.worker_timeout_s
    record = registry.register_without_commit(session, body, timeout)
    return registry.to_info(record, ctx.settings.worker_timeout_s)


@router.get("", response_model=list[WorkerInfo])
def list_workers(session: SessionDep, ctx: ContextDep, _: ViewerDep) -> list[WorkerInfo]:
    """Every registered worker, most recently seen first."""
    timeout = ctx.settings.worker_timeout_s
    return [registry.to_info(r, timeout) for r in registry.list_workers(session)]


@router.get("/{worker_id}", response_model=WorkerInfo, responses=error_responses(404))
def get_worker(worker_id: str, session: SessionDep, ctx: ContextDep, _: ViewerDep) -> WorkerInfo:
    """One worker."""
    record = registry.get_worker_without_commit(session, worker_id)
    return registry.to_info(record, ctx.settings.worker_timeout_s)
