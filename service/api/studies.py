"""Studies and their trials: create, list, inspect, pause/resume/stop, delete, export.

The ``{study}`` path parameter is a study's name or its integer id. Reading
needs any valid token (viewer, worker or admin); changing needs admin. The
handlers are thin: the domain lives in :mod:`service.studies`,
:mod:`service.studies.trials` and :mod:`service.studies.export`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from hpo.schemas import (
    EnqueuedTrial,
    EnqueueRequest,
    ParetoFront,
    ShownState,
    StudyDiagnosis,
    StudyPage,
    StudySummary,
    TrialDetail,
    TrialOrder,
    TrialPage,
)
from hpo.spec import StudySpec
from service.api.deps import AdminDep, ContextDep, SessionDep, ViewerDep
from service.api.errors import error_responses
from service.studies import records
from service.studies.diagnosis import study_diagnosis
from service.studies.enqueue import enqueue_trial, stop_and_fail_waiting
from service.studies.export import content_disposition, plan_export, stream_csv, stream_json
from service.studies.trials import get_trial, list_trials

router = APIRouter(prefix="/studies", tags=["studies"], responses=error_responses(401, 403))

StudyRef = Annotated[str, Path(description="study name, or its integer id", max_length=512)]
Limit = Annotated[int, Query(ge=1, le=records.MAX_PAGE, description="page size")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items to skip")]


@router.post(
    "",
    status_code=201,
    response_model=StudySummary,
    responses=error_responses(409, 422),
)
def create_study(spec: StudySpec, ctx: ContextDep, _: AdminDep) -> StudySummary:
    """Create a study from its spec (a genuine Optuna study plus the service's record)."""
    record = records.create_study(ctx, spec)
    with ctx.db.session() as session:
        return records.study_summary(session, record, ctx.settings.worker_timeout_s)


@router.get("", response_model=StudyPage)
def list_studies(
    session: SessionDep, ctx: ContextDep, _: ViewerDep, limit: Limit = 50, offset: Offset = 0
) -> StudyPage:
    """Studies in creation order with their trial counts and labels."""
    timeout = ctx.settings.worker_timeout_s
    return records.list_studies(session, limit=limit, offset=offset, worker_timeout_s=timeout)


@router.get("/{study}", response_model=StudySummary, responses=error_responses(404))
def get_study(study: StudyRef, session: SessionDep, ctx: ContextDep, _: ViewerDep) -> StudySummary:
    """A study's spec, run state, trial counts, best trial (or Pareto front), and why it
    waits when no live worker can run its trials."""
    record = records.get_study_record(session, study)
    return records.study_summary(session, record, ctx.settings.worker_timeout_s)


def _change(session: SessionDep, study: str, action: str) -> StudySummary:
    record = records.change_state_without_commit(session, study, action)
    return records.study_summary(session, record)


@router.post("/{study}/pause", response_model=StudySummary, responses=error_responses(404, 409))
def pause_study(study: StudyRef, session: SessionDep, _: AdminDep) -> StudySummary:
    """Stop handing out new trials; running trials finish. Repeating is a no-op."""
    return _change(session, study, "pause")


@router.post("/{study}/resume", response_model=StudySummary, responses=error_responses(404, 409))
def resume_study(study: StudyRef, session: SessionDep, _: AdminDep) -> StudySummary:
    """Hand out trials again. A stopped study cannot be resumed (409)."""
    return _change(session, study, "resume")


@router.post("/{study}/stop", response_model=StudySummary, responses=error_responses(404))
def stop_study(study: StudyRef, ctx: ContextDep, _: AdminDep) -> StudySummary:
    """Stop for good: no new trials, workers are told to stop at their next heartbeat,
    enqueued trials that never ran end as failed."""
    return stop_and_fail_waiting(ctx, study)


@router.delete("/{study}", status_code=204, responses=error_responses(404, 409))
def delete_study(
    study: StudyRef,
    ctx: ContextDep,
    _: AdminDep,
    force: Annotated[bool, Query(description="delete even while leases are active")] = False,
) -> Response:
    """Delete the Optuna study and every record of it (409 while leases are active)."""
    records.delete_study(ctx, study, force=force)
    return Response(status_code=204)


@router.post(
    "/{study}/enqueue",
    status_code=201,
    response_model=EnqueuedTrial,
    responses=error_responses(404, 409, 422),
)
def enqueue(study: StudyRef, body: EnqueueRequest, ctx: ContextDep, _: AdminDep) -> EnqueuedTrial:
    """Optuna's ``study.enqueue_trial``: a WAITING trial with these params fixed, leased
    before any new trial (409 when the study is stopped or its budget is used; 422 for a
    value outside the declared space)."""
    return enqueue_trial(ctx, study, body)


@router.get("/{study}/user_attrs", response_model=dict[str, Any], responses=error_responses(404))
def get_user_attrs(study: StudyRef, session: SessionDep, ctx: ContextDep, _: ViewerDep) -> Any:
    """The Optuna study's user attributes (Optuna's ``study.user_attrs``)."""
    record = records.get_study_record(session, study)
    return ctx.store.storage.get_study_user_attrs(record.study_id)


@router.get("/{study}/pareto", response_model=ParetoFront, responses=error_responses(404))
def get_pareto_front(study: StudyRef, session: SessionDep, _: ViewerDep) -> ParetoFront:
    """The Pareto front: every complete trial no other complete trial dominates, with its
    values and params, by number (for one objective: the best trial). Equal to Optuna's
    ``study.best_trials`` on the same database."""
    return records.pareto(session, records.get_study_record(session, study))


@router.get("/{study}/diagnosis", response_model=StudyDiagnosis, responses=error_responses(404))
def get_diagnosis(study: StudyRef, session: SessionDep, _: ViewerDep) -> StudyDiagnosis:
    """What went wrong in the study's trials (findings per kind) and the spec edits that
    would avoid it, each with its counts (e.g. "9 of 12 adam trials with lr > 0.02
    diverged: narrow lr_adaptive to high: 0.02")."""
    return study_diagnosis(session, records.get_study_record(session, study))


@router.get("/{study}/trials", response_model=TrialPage, responses=error_responses(404))
def get_trials(
    study: StudyRef,
    session: SessionDep,
    _: ViewerDep,
    state: Annotated[ShownState | None, Query(description="only this state")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    order: Annotated[TrialOrder, Query(description="number or value; '-' descends")] = "number",
) -> TrialPage:
    """One page of the study's trials."""
    return list_trials(session, study, state=state, limit=limit, offset=offset, order=order)


@router.get("/{study}/trials/{number}", response_model=TrialDetail, responses=error_responses(404))
def get_trial_detail(
    study: StudyRef,
    number: Annotated[int, Path(ge=0, le=2**31 - 1)],
    session: SessionDep,
    _: ViewerDep,
) -> TrialDetail:
    """One trial by number: values, params, learning curve, metrics, lease history."""
    return get_trial(session, study, number)


@router.get(
    "/{study}/export",
    response_class=StreamingResponse,
    responses={
        **error_responses(404),
        200: {"content": {"text/csv": {}, "application/json": {}}, "description": "trials"},
    },
)
def export_study(
    study: StudyRef,
    ctx: ContextDep,
    session: SessionDep,
    _: ViewerDep,
    fmt: Annotated[Literal["csv", "json"], Query(alias="format")] = "csv",
) -> StreamingResponse:
    """All trials as a CSV or JSON attachment (streamed)."""
    plan = plan_export(session, study)
    if fmt == "csv":
        body, media = stream_csv(ctx, plan), "text/csv; charset=utf-8"
    else:
        body, media = stream_json(ctx, plan), "application/json"
    headers = {"Content-Disposition": content_disposition(plan.name, fmt)}
    return StreamingResponse(body, media_type=media, headers=headers)
