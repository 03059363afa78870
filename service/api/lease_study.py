"""``trial.study`` over REST: a leased trial reads its study and writes its own
attributes (worker or admin token). The domain lives in
:mod:`service.trials.optuna_view`.

Errors: 404 unknown lease, 409 a write through a lease that is no longer live,
422 invalid body or an unknown state name.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from hpo.optuna_view import StudyTrialsBody, StudyViewBody, TrialAttrsRequest
from service.api.deps import ContextDep, WorkerDep
from service.api.errors import error_responses
from service.trials import optuna_view

router = APIRouter(tags=["protocol"], responses=error_responses(401, 403, 404))

States = Annotated[
    list[str] | None,
    Query(max_length=8, description="Optuna's state names (COMPLETE, PRUNED, ...); all if none"),
]


@router.get("/leases/{lease_id}/study", response_model=StudyViewBody)
async def lease_study(lease_id: str, ctx: ContextDep, _: WorkerDep) -> StudyViewBody:
    """The lease's study as Optuna's ``Study`` reads it: name, directions, attributes."""
    return await run_in_threadpool(optuna_view.study_view, ctx, lease_id)


@router.get(
    "/leases/{lease_id}/study/trials",
    response_model=StudyTrialsBody,
    responses=error_responses(422),
)
async def lease_study_trials(
    lease_id: str, ctx: ContextDep, _: WorkerDep, states: States = None
) -> StudyTrialsBody:
    """The study's trials as Optuna's ``FrozenTrial`` holds them, by number."""
    return await run_in_threadpool(optuna_view.study_trials, ctx, lease_id, states)


@router.post("/leases/{lease_id}/attrs", status_code=204, responses=error_responses(409, 422))
async def set_trial_attrs(
    lease_id: str, body: TrialAttrsRequest, ctx: ContextDep, _: WorkerDep
) -> None:
    """Write attributes of the lease's own trial now (constraints, user attributes)."""
    await run_in_threadpool(optuna_view.set_attrs, ctx, lease_id, body)
