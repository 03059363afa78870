"""A study's label (:class:`hpo.schemas.StudyStatus`): the one place its rules live.

The API's study summary and the dashboard (studies page, study page) both call
:func:`study_status`, so they never disagree. The rules, first match wins:

1. ``stopped`` when the run state is stopped (final; running trials may still end);
2. ``complete`` when the budget is spent and no trial runs, waits or is queued
   (a paused study whose budget is spent is complete too: nothing is left to pause);
3. ``paused`` when the run state is paused;
4. ``running`` when a worker holds a lease on one of its trials;
5. ``waiting`` otherwise, with why (:class:`hpo.schemas.WaitingOn`): ``budget`` when
   every trial of the budget is handed out and nothing is queued for a re-run (the
   unfinished ones hold no lease), else ``no_workers`` / ``resources`` from the fleet.

A study created outside the service (no run state, no budget) is ``running`` while
Optuna has a running or waiting trial of it and ``complete`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.protocol import Resources
from hpo.schemas import StudyState, StudyStatus, TrialCounts, WaitingOn
from hpo.spec import StudySpec
from service.core.db import utcnow
from service.fleet.registry import capabilities
from service.storage.models import WorkerRecord


@dataclass(frozen=True)
class Label:
    """A study's label, why it waits (code and words), for the API and the pages."""

    status: StudyStatus
    waiting_on: WaitingOn | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Fleet:
    """The live workers: (workloads, resources) of each, and whether it holds a lease."""

    workers: tuple[tuple[tuple[str, ...], Resources, bool], ...]

    def why_not(self, spec: StudySpec) -> tuple[WaitingOn, str]:
        """Why none of these workers runs ``spec``'s trials now."""
        if not self.workers:
            return WaitingOn.NO_WORKERS, "no live worker"
        runs_it = [w for w in self.workers if spec.workload in w[0]]
        if not runs_it:
            why = f"no live worker runs workload {spec.workload!r} (start one with --workload)"
            return WaitingOn.NO_WORKERS, why
        need = Resources.model_validate(spec.resources.model_dump())
        able = [w for w in runs_it if w[1].covers(need)]
        if not able:
            has = max((w[1] for w in runs_it), key=lambda r: (r.gpus, r.gpu_memory_gb))
            return WaitingOn.RESOURCES, (
                f"trials need {need.gpus} GPU(s) with {need.gpu_memory_gb:g} GiB each; the best "
                f"live worker of workload {spec.workload!r} has {has.gpus} with "
                f"{has.gpu_memory_gb:g} GiB"
            )
        busy = sum(1 for w in able if w[2])
        return WaitingOn.RESOURCES, (
            f"{len(able)} live worker(s) can run it ({busy} busy); waiting for one to lease"
        )


def live_fleet(session: Session, timeout_s: float) -> Fleet:
    """The workers seen within ``timeout_s`` (one query)."""
    since = utcnow() - timedelta(seconds=timeout_s)
    rows = session.scalars(select(WorkerRecord).where(WorkerRecord.last_seen_at >= since))
    out = []
    for record in rows:
        workloads, resources = capabilities(record)
        out.append((tuple(workloads), resources, record.current_trial_id is not None))
    return Fleet(tuple(out))


def study_status(
    run_state: str | None,
    counts: TrialCounts,
    spec: StudySpec | None,
    fleet: Fleet | None = None,
) -> Label:
    """The label of a study in ``run_state`` with ``counts`` (see the module's rules).
    Without ``fleet`` a waiting study says no more than that it waits."""
    unfinished = counts.running + counts.waiting + counts.queued
    if run_state is None or spec is None:  # created outside the service
        return Label(StudyStatus.RUNNING if unfinished else StudyStatus.COMPLETE)
    if run_state == StudyState.STOPPED:
        return Label(StudyStatus.STOPPED)
    spent = counts.total >= spec.budget.max_trials
    if spent and not unfinished:
        return Label(StudyStatus.COMPLETE)
    if run_state == StudyState.PAUSED:
        return Label(StudyStatus.PAUSED)
    if counts.leased:
        return Label(StudyStatus.RUNNING)
    if spent and not counts.queued:
        return Label(
            StudyStatus.WAITING,
            WaitingOn.BUDGET,
            (
                f"all {spec.budget.max_trials} trials of the budget are handed out; "
                f"{unfinished} unfinished hold no lease"
            ),
        )
    if fleet is None:
        return Label(StudyStatus.WAITING)
    code, why = fleet.why_not(spec)
    return Label(StudyStatus.WAITING, code, why)
