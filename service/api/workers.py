"""Worker registry: registration (worker token) and listing (any token)."""

from __future__ import annotations

from fastapi import APIRouter

from hpo.protocol import WorkerInfo, WorkerRegistration
from service.api.deps import ServicesDep, SessionDep, ViewerDep, WorkerDep
from service.api.errors import error_responses
from service.fleet import registry as workers_registry

router = APIRouter(prefix="/workers", tags=["workers"], responses=error_responses(401, 403))


@router.post("/register", status_code=201, response_model=WorkerInfo)
def register(
    body: WorkerRegistration, session: SessionDep, ctx: ServicesDep, _: WorkerDep
) -> WorkerInfo:
    """Register a worker process; the answer carries its ``worker_id``."""
    timeout = ctx.settings.worker_timeout_s
    record = workers_registry.register_without_commit(session, body, timeout)
    return workers_registry.to_info(record, ctx.settings.worker_timeout_s)


@router.get("", response_model=list[WorkerInfo])
def list_workers(session: SessionDep, ctx: ServicesDep, _: ViewerDep) -> list[WorkerInfo]:
    """Every registered worker, most recently seen first."""
    timeout = ctx.settings.worker_timeout_s
    return [workers_registry.to_info(r, timeout) for r in workers_registry.list_workers(session)]


@router.get("/{worker_id}", response_model=WorkerInfo, responses=error_responses(404))
def get_worker(worker_id: str, session: SessionDep, ctx: ServicesDep, _: ViewerDep) -> WorkerInfo:
    """One worker."""
    record = workers_registry.get_worker_without_commit(session, worker_id)
    return workers_registry.to_info(record, ctx.settings.worker_timeout_s)
