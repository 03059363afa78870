"""complete / fail / abandon: finishing a trial exactly once, idempotently per lease.

Finishing runs in three steps so that no transaction of ours is open while
Optuna writes through its own connection:

1. **Claim** (one transaction): compare-and-set the lease ``active`` (or
   ``expired``, when its trial was not re-leased yet) -> ``finishing`` and store
   the request in ``hpo_leases.result``. Only one caller can win it, so two
   concurrent completes (or complete vs the reaper) never both tell Optuna.
2. **Tell** Optuna (user attrs first, then ``study.tell``), skipped when the
   Optuna trial is already finished.
3. **Record** (one transaction): lease ``finishing`` -> ``completed``/``failed``
   with the answer stored; trial row ``finished``.

A retried request on a finished lease returns the stored answer and changes
nothing. A lease found in ``finishing`` (a server died between 1 and 3, or a
concurrent request is in step 2) is finished from the *stored* request, so the
outcome is the same whoever finishes it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import optuna
from sqlalchemy.orm import Session

from hpo.constraints import constraint_values
from hpo.protocol import CompleteRequest, FailRequest, FinishResponse, FinishState, TrialOutcome
from hpo.spec import StudySpec
from service import schedules
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import InvalidRequest, LeaseExpired, TrialFinished
from service.fleet import registry
from service.storage.optuna_store import finished_copy
from service.trials.findings import diagnostics_without_commit
from service.trials.rows import (
    FINAL_STATES,
    LeaseView,
    cached_study,
    check_current,
    load_lease_without_commit,
    retries_used,
    stored_answer,
    study_budget,
    study_spec,
    tell_optuna,
)
from service.trials.states import (
    DONE_LEASE_STATES,
    Changed,
    LeaseState,
    StudyState,
    TrialState,
    move_lease,
    move_trial,
)

log = logging.getLogger("hpo.leases")
OptunaState = optuna.trial.TrialState
_OPTUNA_STATE = {
    TrialOutcome.COMPLETE: OptunaState.COMPLETE,
    TrialOutcome.PRUNED: OptunaState.PRUNED,
    TrialOutcome.FAIL: OptunaState.FAIL,
}


@dataclass(frozen=True)
class Outcome:
    """What a finish request asks for; stored in the lease while it is finishing."""

    state: TrialOutcome  # complete | pruned | fail
    lease_state: LeaseState  # completed | failed | abandoned
    values: list[float] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    diagnosis: str | None = None
    reason: str | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, float] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        state, lease_state = TrialOutcome(data["state"]), LeaseState(data["lease_state"])
        return cls(**{**data, "state": state, "lease_state": lease_state})


@dataclass
class _Claim:
    view: LeaseView
    outcome: Outcome


OutcomeFactory = Callable[[LeaseView], Outcome]


# --------------------------------------------------------------------------- entry points


def complete(ctx: AppContext, lease_id: str, body: CompleteRequest) -> FinishResponse:
    """Finish the trial as complete (value required) or pruned."""
    return finish(ctx, lease_id, lambda view: _complete_outcome(view, body))


def fail(ctx: AppContext, lease_id: str, body: FailRequest) -> FinishResponse:
    """Fail the trial for good (``retry=False``) or abandon this attempt (``retry=True``)."""
    if body.retry:
        return abandon(ctx, lease_id, body)
    outcome = Outcome(
        TrialOutcome.FAIL,
        LeaseState.FAILED,
        diagnosis=body.diagnosis,
        reason=body.reason,
        user_attrs=body.user_attrs,
        telemetry=body.telemetry,
    )
    return finish(ctx, lease_id, lambda _view: outcome)


def recover(ctx: AppContext, lease_id: str) -> FinishResponse:
    """Finish a lease stuck in ``finishing`` from its stored request (reaper)."""

    def refuse(_view: LeaseView) -> Outcome:
        raise LeaseExpired(f"lease {lease_id} is not finishing", "lease_id")

    return finish(ctx, lease_id, refuse)


def finish(ctx: AppContext, lease_id: str, make_outcome: OutcomeFactory) -> FinishResponse:
    """Claim, tell, record (see the module docstring)."""
    claim = _claim(ctx, lease_id, make_outcome)
    if isinstance(claim, FinishResponse):
        return claim
    frozen = _tell(ctx, claim)
    answer = _record(ctx, claim, frozen)
    schedules.after_finish(ctx, claim.view.study, claim.view.trial.optuna_trial_id, answer.state)
    return answer


# --------------------------------------------------------------------------- outcomes


def _complete_outcome(view: LeaseView, body: CompleteRequest) -> Outcome:
    extra = {
        "diagnosis": body.diagnosis,
        "user_attrs": body.user_attrs,
        "telemetry": body.telemetry,
    }
    if body.state == FinishState.PRUNED:
        values = None if body.value is None else [body.value]
        pruned = TrialOutcome.PRUNED
        return Outcome(pruned, LeaseState.COMPLETED, values, body.metrics, **extra)
    values = _objective_values(study_spec(view.study).objective_names, body)
    complete = TrialOutcome.COMPLETE
    return Outcome(complete, LeaseState.COMPLETED, values, body.metrics, **extra)


def _objective_values(names: list[str], body: CompleteRequest) -> list[float]:
    """Every objective's value: ``values``, or ``value`` plus the other objectives' metrics."""
    if body.values is not None:
        if len(body.values) != len(names):
            raise InvalidRequest(
                f"values: {len(body.values)} values for {len(names)} objectives "
                f"({', '.join(names)})",
                "values",
            )
        return list(body.values)
    if body.value is None:
        raise InvalidRequest("value: required when state is complete", "value")
    values = [body.value]
    for name in names[1:]:
        extra = body.metrics.get(name)
        if isinstance(extra, bool) or not isinstance(extra, int | float):
            raise InvalidRequest(
                f"metrics.{name}: a number is required (objective of a multi-objective study)",
                f"metrics.{name}",
            )
        values.append(float(extra))
    return values


# --------------------------------------------------------------------------- step 1: claim


def _claim(ctx: AppContext, lease_id: str, make_outcome: OutcomeFactory) -> _Claim | FinishResponse:
    for _ in range(3):
        try:
            with ctx.db.session() as session:
                return _claim_without_commit(session, lease_id, make_outcome)
        except Changed:
            continue
    raise LeaseExpired(f"lease {lease_id} changed while finishing; retry", "lease_id")


def _claim_without_commit(
    session: Session, lease_id: str, make_outcome: OutcomeFactory
) -> _Claim | FinishResponse:
    view = load_lease_without_commit(session, lease_id)
    lease, trial = view.lease, view.trial
    answer = stored_answer(lease)
    if lease.state in DONE_LEASE_STATES and answer is not None:
        return FinishResponse.model_validate(answer)
    if lease.state == LeaseState.FINISHING:
        return _Claim(view, Outcome.from_json((lease.result or {})["request"]))
    check_current(view)
    if trial.state == TrialState.FINISHED:
        raise TrialFinished(f"{view.label} already finished ({trial.final_state})", "lease_id")
    outcome = make_outcome(view)
    if lease.state not in (LeaseState.ACTIVE, LeaseState.EXPIRED):
        raise LeaseExpired(f"lease {lease_id} is {lease.state}", "lease_id")
    now = utcnow()
    claimed = {"result": {"request": asdict(outcome)}, "ended_at": now}
    move_lease(session, lease_id, [lease.state], LeaseState.FINISHING, claimed)
    if lease.state == LeaseState.EXPIRED:  # not re-leased yet: take the trial back from the queue
        queued = [TrialState.QUEUED]
        move_trial(session, trial.id, queued, TrialState.LEASED, {}, now, lease_id=lease_id)
    return _Claim(view, outcome)


# --------------------------------------------------------------------------- step 2: tell


def _tell(ctx: AppContext, claim: _Claim) -> optuna.trial.FrozenTrial:
    """Tell Optuna the outcome unless its trial already finished; returns the trial.

    After a tell that stored what was asked, the finished trial is built from what
    was read and written here (no re-read); any other case re-reads it.
    """
    trial_id = claim.view.trial.optuna_trial_id
    assert trial_id is not None
    storage = ctx.store.storage
    cached = cached_study(ctx, claim.view.study)
    frozen = storage.get_trial(trial_id)
    if frozen.state == OptunaState.RUNNING:
        try:
            done = _tell_running(ctx, cached, frozen, claim.outcome)
            if done is not None:
                return done
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished concurrently (same stored request)
        except (ValueError, TypeError) as exc:  # never leave the lease stuck
            log.exception("trial %d: tell failed; failing it", trial_id)
            storage.set_trial_user_attr(trial_id, "fail_reason", f"could not record: {exc}")
            tell_optuna(cached, frozen.number, OptunaState.FAIL)
    return storage.get_trial(trial_id)


def _tell_running(
    ctx: AppContext, cached: Any, frozen: optuna.trial.FrozenTrial, outcome: Outcome
) -> optuna.trial.FrozenTrial | None:
    """User attrs, then tell; the finished trial, or None when it must be re-read."""
    storage, trial_id = ctx.store.storage, frozen._trial_id
    attrs: dict[str, Any] = dict(outcome.user_attrs)
    if outcome.diagnosis is not None:
        attrs["diagnosis"] = outcome.diagnosis
    if outcome.metrics:
        attrs["final_metrics"] = outcome.metrics
    if outcome.reason is not None:
        attrs["fail_reason"] = outcome.reason
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    if outcome.state == TrialOutcome.COMPLETE and cached.spec.constraints:
        frozen = _set_declared_constraints(ctx, cached.spec, frozen, outcome.metrics)
    values = outcome.values
    state = _OPTUNA_STATE[outcome.state]
    if outcome.state == TrialOutcome.PRUNED:
        if values and not frozen.intermediate_values:
            # Optuna stores a pruned trial's last intermediate value as its value.
            storage.set_trial_intermediate_value(trial_id, 0, values[0])
            frozen = storage.get_trial(trial_id)
        values = None
    told = tell_optuna(cached, frozen.number, state, values)
    if told is None or told[0] != state:
        return None
    return finished_copy(frozen, told[0], told[1], attrs)


def _set_declared_constraints(
    ctx: AppContext, spec: StudySpec, frozen: optuna.trial.FrozenTrial, metrics: dict[str, Any]
) -> optuna.trial.FrozenTrial:
    """The spec's ``constraints`` on the final metrics, as Optuna's system attributes
    (through the trial view, so the study's sampler sees them at once)."""
    out = copy.copy(frozen)
    out.system_attrs = dict(frozen.system_attrs)
    for key, value in constraint_values(spec.constraints, metrics).items():
        if key not in frozen.system_attrs:  # set_constraint by the objective wins
            ctx.store.view.set_trial_system_attr(frozen._trial_id, key, value)
            out.system_attrs[key] = value
    return out


# --------------------------------------------------------------------------- step 3: record


def _record(ctx: AppContext, claim: _Claim, frozen: optuna.trial.FrozenTrial) -> FinishResponse:
    if frozen.state not in FINAL_STATES:
        raise RuntimeError(f"trial {frozen._trial_id} is still {frozen.state.name} after tell")
    view, outcome = claim.view, claim.outcome
    state = FINAL_STATES[frozen.state]
    answer = FinishResponse(
        trial_id=frozen._trial_id,
        trial_number=frozen.number,
        state=state,
        value=frozen.values[0] if frozen.values else None,
    )
    now = utcnow()
    result = {"request": asdict(outcome), "answer": answer.model_dump(mode="json")}
    try:
        with ctx.db.session() as session:
            done = {"result": result, "ended_at": now}
            lease_id, finishing = view.lease.lease_id, [LeaseState.FINISHING]
            move_lease(session, lease_id, finishing, outcome.lease_state, done)
            _finish_trial_without_commit(session, view, frozen, answer, outcome, now)
    except Changed:  # recorded by a concurrent request: answer what it stored
        with ctx.db.session() as session:
            stored = stored_answer(load_lease_without_commit(session, view.lease.lease_id).lease)
        return FinishResponse.model_validate(stored) if stored else answer
    ctx.metrics.trials_finished.labels(state).inc()
    return answer


def _finish_trial_without_commit(
    session: Session,
    view: LeaseView,
    frozen: optuna.trial.FrozenTrial,
    answer: FinishResponse,
    outcome: Outcome,
    now: datetime,
) -> None:
    attrs = frozen.user_attrs
    values = {
        **diagnostics_without_commit(session, frozen._trial_id, attrs, outcome.telemetry),
        "final_state": answer.state,
        "value": answer.value,
        "fail_reason": attrs.get("fail_reason") if answer.state == TrialOutcome.FAIL else None,
        "diagnosis": attrs.get("diagnosis"),
        "lease_expires_at": None,
        "finished_at": now,
    }
    # The claim made this lease the trial's finisher: the row is leased (or already
    # finished by the reaper's repair of the same stored request), never anything else.
    unfinished = [TrialState.LEASED, TrialState.QUEUED]
    move_trial(session, view.trial.id, unfinished, TrialState.FINISHED, values, now, strict=False)
    registry.clear_current_without_commit(session, view.lease.worker_id, view.trial.optuna_trial_id)


# --------------------------------------------------------------------------- abandon


def abandon(ctx: AppContext, lease_id: str, body: FailRequest) -> FinishResponse:
    """Give this attempt up: the trial is queued for a re-run at once (if retries remain)."""
    for _ in range(3):
        try:
            with ctx.db.session() as session:
                answer = _abandon_without_commit(session, lease_id, body)
        except Changed:
            continue
        if isinstance(answer, Outcome):  # no retries left (or stopped): fail it
            return finish(ctx, lease_id, lambda _view, out=answer: out)
        return answer
    raise LeaseExpired(f"lease {lease_id} changed while abandoning; retry", "lease_id")


def _abandon_without_commit(
    session: Session, lease_id: str, body: FailRequest
) -> FinishResponse | Outcome:
    view = load_lease_without_commit(session, lease_id)
    lease, trial, study = view.lease, view.trial, view.study
    answer = stored_answer(lease)
    if lease.state in DONE_LEASE_STATES and answer is not None:
        return FinishResponse.model_validate(answer)
    if lease.state == LeaseState.FINISHING:
        return Outcome.from_json((lease.result or {})["request"])
    check_current(view)
    if trial.state == TrialState.FINISHED:
        raise TrialFinished(f"{view.label} already finished ({trial.final_state})", "lease_id")
    max_retries = study_budget(study).max_retries
    stopped = study.state == StudyState.STOPPED
    back = (
        None
        if stopped
        else schedules.hand_back_without_commit(session, study, trial, lease_id, lease.worker_id)
    )
    if back is not None:  # a schedule's pause: paused (ASHA) or the segment's end (PBT)
        if back.paused is not None:
            return back.paused
        complete, value = TrialOutcome.COMPLETE, back.complete_value or 0.0
        return Outcome(complete, LeaseState.COMPLETED, [value], user_attrs=body.user_attrs)
    if stopped or (not body.preempted and retries_used(trial) >= max_retries):
        why = "study stopped" if stopped else f"max_retries={max_retries} used up"
        reason = f"attempt {trial.attempts} abandoned ({body.reason}); {why}"
        fail = TrialOutcome.FAIL
        return Outcome(
            fail,
            LeaseState.ABANDONED,
            diagnosis=body.diagnosis,
            reason=reason,
            user_attrs=body.user_attrs,
        )
    assert trial.optuna_trial_id is not None and trial.number is not None
    queued = FinishResponse(
        trial_id=trial.optuna_trial_id, trial_number=trial.number, state=TrialOutcome.QUEUED
    )
    now = utcnow()
    answer = queued.model_dump(mode="json")
    result = {"reason": body.reason, "preempted": body.preempted, "answer": answer}
    given_back = {"result": result, "ended_at": now}
    move_lease(
        session, lease_id, [LeaseState.ACTIVE, LeaseState.EXPIRED], LeaseState.ABANDONED, given_back
    )
    unfinished, release = [TrialState.LEASED, TrialState.QUEUED], {"lease_expires_at": None}
    if body.preempted:  # not a retry: the next attempt does not count against max_retries
        release["preemptions"] = trial.preemptions + 1
    move_trial(session, trial.id, unfinished, TrialState.QUEUED, release, now, lease_id=lease_id)
    registry.clear_current_without_commit(session, lease.worker_id, trial.optuna_trial_id)
    return queued
