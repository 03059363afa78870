"""The trial protocol workers speak (worker or admin token); thin handlers.

Errors: 404 unknown lease (or unregistered worker on lease), 409 stale lease
(expired and re-leased, or already finished) or trial finished through another
lease, 422 invalid body. See :mod:`service.trials` for the semantics.
"""

from __future__ import annotations

from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool

from hpo.protocol import (
    ActionResponse,
    CompleteRequest,
    FailRequest,
    FinishResponse,
    HeartbeatRequest,
    LeaseRequest,
    LeaseResponse,
    ReportRequest,
    SuggestRequest,
    SuggestResponse,
)
from service import trials
from service.api.deps import ContextDep, WorkerDep
from service.api.errors import error_responses
from service.trials.requests import lease_once

router = APIRouter(tags=["protocol"], responses=error_responses(401, 403))
_LEASE_ERRORS = error_responses(404, 409)
_LEASE_ERRORS_422 = error_responses(404, 409, 422)


@router.post("/trials/lease", response_model=LeaseResponse, responses=error_responses(404))
async def lease_trial(body: LeaseRequest, ctx: ContextDep, _: WorkerDep) -> LeaseResponse:
    """Lease one trial, or up to ``max_trials`` (each with its own lease); with ``wait_s`` > 0
    the answer waits up to that long for work."""
    return await lease_once(
        ctx,
        body,
        lambda: trials.long_poll(ctx, body.worker_id, body.studies, body.wait_s, body.max_trials),
    )


@router.post("/leases/{lease_id}/heartbeat", response_model=ActionResponse, responses=_LEASE_ERRORS)
def heartbeat(
    lease_id: str,
    ctx: ContextDep,
    _: WorkerDep,
    body: HeartbeatRequest | None = Body(default=None),
) -> ActionResponse:
    """Extend the lease (and record the worker's device telemetry); the answer says
    continue, prune or stop."""
    return trials.heartbeat(ctx, lease_id, body.telemetry if body else None)


@router.post("/leases/{lease_id}/report", response_model=ActionResponse, responses=_LEASE_ERRORS)
async def report(
    lease_id: str, body: ReportRequest, ctx: ContextDep, _: WorkerDep
) -> ActionResponse:
    """One intermediate objective value (per epoch); the answer says continue, prune or stop."""
    return await run_in_threadpool(
        trials.report, ctx, lease_id, body.step, body.value, body.metrics
    )


@router.post(
    "/leases/{lease_id}/suggest", response_model=SuggestResponse, responses=_LEASE_ERRORS_422
)
def suggest(lease_id: str, body: SuggestRequest, ctx: ContextDep, _: WorkerDep) -> SuggestResponse:
    """Define-by-run: sample one parameter with the study's sampler (recorded value on re-runs)."""
    return trials.suggest(ctx, lease_id, body)


@router.post("/leases/{lease_id}/complete", response_model=FinishResponse, responses=_LEASE_ERRORS)
def complete(lease_id: str, body: CompleteRequest, ctx: ContextDep, _: WorkerDep) -> FinishResponse:
    """Finish the trial (complete or pruned); a retried request gets the same answer."""
    return trials.complete(ctx, lease_id, body)


@router.post("/leases/{lease_id}/fail", response_model=FinishResponse, responses=_LEASE_ERRORS)
def fail(lease_id: str, body: FailRequest, ctx: ContextDep, _: WorkerDep) -> FinishResponse:
    """Fail the trial (``retry=false``) or abandon this attempt (``retry=true``)."""
    return trials.fail(ctx, lease_id, body)
