"""Enqueued trials: Optuna's ``study.enqueue_trial`` on a service study.

``enqueue_trial`` adds a WAITING Optuna trial whose system attribute
``fixed_params`` holds the given values, exactly as Optuna's own
``Study.enqueue_trial`` does; the next lease of the study takes the oldest
WAITING trial before it creates a new one (queued re-runs still come first), and
its sampling step suggests the fixed values (parameters left out are sampled).

Checks beyond Optuna's: the study must be running or paused (a stopped study
hands out nothing), an enqueued trial counts against ``max_trials`` (so none is
left WAITING for ever), and in a study with a declared space every value must
be a parameter of the space and lie in its range (Optuna would use an
out-of-range value with a warning, and fail the trial on an unknown choice).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState
from optuna.trial import create_trial
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hpo.schemas import EnqueuedTrial, EnqueueRequest, StudyState, StudySummary
from hpo.spec import CategoricalParam, FloatParam, IntParam, Param, StudySpec
from service.core.context import AppContext
from service.core.errors import Conflict, InvalidRequest
from service.storage.models import StudyRecord, TrialRecord
from service.storage.optuna_rows import trials
from service.studies.records import (
    change_state_without_commit,
    get_study_record,
    load_spec,
    study_summary,
)


def enqueue_trial(ctx: AppContext, ref: str, body: EnqueueRequest) -> EnqueuedTrial:
    """Add a WAITING trial with ``body.params`` fixed (see the module docstring)."""
    with ctx.db.session() as session:
        record = get_study_record(session, ref)
        spec = load_spec(record)
        _check_room(session, record, spec)
    check_params(spec, body.params)
    storage = ctx.store.storage
    study = optuna.load_study(
        study_name=record.name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    if body.skip_if_exists and study._should_skip_enqueue(body.params):
        return EnqueuedTrial(study=record.name, skipped=True)
    template = create_trial(
        state=OptunaState.WAITING,
        system_attrs={"fixed_params": body.params},
        user_attrs=body.user_attrs,
    )
    trial_id = storage.create_new_trial(record.study_id, template_trial=template)
    number = storage.get_trial_number_from_id(trial_id)
    return EnqueuedTrial(study=record.name, trial_id=trial_id, number=number)


def _check_room(session: Session, record: StudyRecord, spec: StudySpec) -> None:
    """Conflict when the study is stopped, or when its budget has no room left."""
    if record.state == StudyState.STOPPED:
        raise Conflict(f"study {record.name!r} is stopped: it runs no more trials", "study")
    rows = session.scalar(
        select(func.count(TrialRecord.id)).where(TrialRecord.study_id == record.study_id)
    )
    waiting = session.scalar(
        select(func.count())
        .select_from(trials)
        .where(trials.c.study_id == record.study_id, trials.c.state == OptunaState.WAITING)
    )
    used = int(rows or 0) + int(waiting or 0)
    if used >= spec.budget.max_trials:
        raise Conflict(
            f"study {record.name!r}: budget used ({used}/{spec.budget.max_trials} trials, "
            f"{int(waiting or 0)} of them enqueued)",
            "study",
        )


def check_params(spec: StudySpec, params: dict[str, Any]) -> None:
    """InvalidRequest unless each value fits the declared space (define-by-run: any)."""
    if spec.define_by_run:
        return
    for name, value in params.items():
        param = spec.space.get(name)
        if param is None:
            declared = ", ".join(spec.space)
            raise InvalidRequest(
                f"params.{name}: not a parameter of the study's space (declared: {declared})",
                f"params.{name}",
            )
        problem = _misfit(param, value)
        if problem:
            raise InvalidRequest(f"params.{name}: {problem}", f"params.{name}")


def _misfit(param: Param, value: Any) -> str | None:
    """Why ``value`` is not a value of ``param`` (None: it is)."""
    if isinstance(param, CategoricalParam):
        return None if value in param.choices else f"{value!r} is not one of {param.choices}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if isinstance(param, IntParam) and not float(value).is_integer():
        return f"{value!r} is not an integer"
    assert isinstance(param, FloatParam | IntParam)
    if not (math.isfinite(value) and param.low <= value <= param.high):
        return f"{value!r} is outside [{param.low}, {param.high}]"
    return None


#: Why a stopped study's enqueued trials ended without running.
STOPPED_REASON = "the study was stopped before this enqueued trial ran"


def stop_and_fail_waiting(ctx: AppContext, ref: str) -> StudySummary:
    """Stop the study (committed first: Optuna's writes below use their own
    connection), then end its enqueued trials."""
    with ctx.db.session() as session:
        study_id = change_state_without_commit(session, ref, "stop").study_id
    fail_waiting(ctx, study_id)
    from service.schedules import end_paused  # promotion ASHA: paused trials end pruned

    end_paused(ctx, study_id)
    with ctx.db.session() as session:
        return study_summary(session, get_study_record(session, ref))


def fail_waiting(ctx: AppContext, study_id: int) -> int:
    """A stopped study hands out nothing: its WAITING trials end as FAIL (through
    RUNNING, so Optuna records a start), each with the reason; how many there were."""
    failed = 0
    while (trial_id := ctx.store.view.pop_waiting(study_id)) is not None:
        ctx.store.storage.set_trial_user_attr(trial_id, "fail_reason", STOPPED_REASON)
        ctx.store.storage.set_trial_state_values(trial_id, OptunaState.FAIL)
        failed += 1
    return failed
