"""Answers of the study and trial endpoints (pydantic only): the read side of the API.

The server's study domain builds these directly (the routers stay thin and the
dashboard reuses them); :class:`hpo.Client` parses answers into them.
Non-finite floats (an objective of ``inf``) serialize as ``null`` in JSON.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StudyState(StrEnum):
    """Run state of a study: ``running <-> paused``; any -> ``stopped`` (final)."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class StudyStatus(StrEnum):
    """The label a study is shown with (API summary, dashboard): what it is doing now.

    ``complete``: the budget is spent and nothing runs or waits to run; ``running``: a
    worker holds a lease on one of its trials; ``paused`` / ``stopped``: its run state;
    ``waiting``: it has work but nothing runs (:class:`WaitingOn` says why).
    """

    COMPLETE = "complete"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    WAITING = "waiting"


class WaitingOn(StrEnum):
    """Why a ``waiting`` study runs nothing."""

    NO_WORKERS = "no_workers"  # no live worker, or none runs its workload
    RESOURCES = "resources"  # no live worker has its resources, or those that do are busy
    BUDGET = "budget"  # every trial of the budget is handed out; unfinished ones hold no lease


class ShownState(StrEnum):
    """The state a trial is shown in: Optuna's, plus ``queued`` (waiting for a re-run)."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    RUNNING = "running"
    WAITING = "waiting"
    QUEUED = "queued"
    PAUSED = "paused"  # handed back at a rung (promotion ASHA): not running


TrialOrder = Literal["number", "-number", "value", "-value"]


class TrialCounts(BaseModel):
    """Trials per state. ``complete + pruned + fail + running + waiting + queued + paused ==
    total``;
    ``leased`` counts the running trials a worker holds a lease on."""

    complete: int = 0
    pruned: int = 0
    fail: int = 0
    running: int = 0
    waiting: int = 0
    queued: int = 0
    paused: int = 0
    leased: int = 0
    total: int = 0


class BestTrial(BaseModel):
    """A best trial (single objective) or one trial of the Pareto front."""

    number: int
    trial_id: int
    value: float | None = Field(default=None, description="the objective (single-objective)")
    values: list[float | None]
    params: dict[str, Any]


class StudyItem(BaseModel):
    """A study as listed: identity, run state and trial counts."""

    study_id: int
    name: str
    state: StudyState
    directions: list[str]
    objectives: list[str]
    sampler: str
    pruner: str
    max_trials: int
    counts: TrialCounts
    created_at: datetime
    updated_at: datetime
    status: StudyStatus = Field(
        default=StudyStatus.WAITING, description="what the study is doing now (its label)"
    )
    waiting_on: WaitingOn | None = Field(default=None, description="why a waiting study waits")


class StudySummary(StudyItem):
    """One study in full: its spec, seed and best trial (or Pareto front)."""

    description: str
    seed: int
    spec: dict[str, Any]
    best_trial: BestTrial | None = Field(default=None, description="single-objective studies")
    best_trials: list[BestTrial] | None = Field(
        default=None, description="multi-objective studies: the Pareto front"
    )
    waiting_reason: str | None = Field(
        default=None,
        description="why the study's trials wait: no live worker runs its workload or has "
        "its resources",
    )


class ParetoFront(BaseModel):
    """The non-dominated complete trials of a study (its best trial when single-objective)."""

    study: str
    objectives: list[str]
    directions: list[str]
    trials: list[BestTrial]


class SpecEdit(BaseModel):
    """Replace the value at ``path`` (dotted, into the spec) ``old`` -> ``new``."""

    op: Literal["replace"] = "replace"
    path: str
    old: Any
    new: Any


class Proposal(BaseModel):
    """One pattern across trials and the spec edit that avoids it."""

    parameter: str = Field(description="the space entry the edit changes")
    outcome: str = Field(description="finding kind, or 'failed'")
    region: Literal["above", "below", "choice"]
    threshold: float | None = Field(default=None, description="split value (numeric patterns)")
    choices: list[Any] = Field(default_factory=list, description="removed choices (categorical)")
    condition: dict[str, Any] = Field(
        default_factory=dict, description="only trials with these categorical values"
    )
    bad: int = Field(description="trials in the region with the outcome")
    total: int = Field(description="trials in the region")
    kept_bad: int = Field(description="trials on the kept side with the outcome")
    kept_total: int = Field(description="trials on the kept side")
    p_value: float
    pattern: str
    edit: SpecEdit
    message: str
    related: list[str] = Field(
        default_factory=list, description="weaker patterns that the same edit also addresses"
    )


class StudyDiagnosis(BaseModel):
    """Patterns across a study's finished trials and the spec edits that avoid them."""

    study: str
    trials: int = Field(description="finished trials read (the latest, at most 2,000)")
    findings: dict[str, int] = Field(description="trials with each kind of finding")
    proposals: list[Proposal] = Field(description="strongest first; none for a healthy study")


class StudyPage(BaseModel):
    items: list[StudyItem]
    total: int
    limit: int
    offset: int


class TrialItem(BaseModel):
    """One trial as listed (Optuna's record joined with the service's lease bookkeeping)."""

    number: int
    trial_id: int
    state: ShownState
    value: float | None = None
    values: list[float | None] | None = None
    params: dict[str, Any]
    attempts: int
    #: attempts a preempted worker handed back (SIGTERM): not failures, not retries
    preemptions: int = 0
    worker_id: str | None = None
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    duration_s: float | None = None
    fail_reason: str | None = None
    diagnosis: str | None = None


class TrialPage(BaseModel):
    items: list[TrialItem]
    total: int
    limit: int
    offset: int


class EnqueueRequest(BaseModel):
    """``POST /studies/{study}/enqueue``: Optuna's ``study.enqueue_trial`` (the next lease
    of the study runs these params; parameters left out are sampled)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(max_length=100)
    user_attrs: dict[str, Any] = Field(default_factory=dict, max_length=64)
    skip_if_exists: bool = Field(
        default=False,
        strict=True,
        description="enqueue nothing when a trial with these params exists",
    )


class EnqueuedTrial(BaseModel):
    """The WAITING trial an enqueue added (none when ``skipped``)."""

    study: str
    trial_id: int | None = None
    number: int | None = None
    skipped: bool = False


class IntermediateValue(BaseModel):
    step: int
    value: float | None


class StepMetrics(BaseModel):
    """Metrics a worker reported for one step (epoch) of one attempt."""

    step: int
    attempt: int
    value: float | None
    metrics: dict[str, Any]
    created_at: datetime


class LeaseInfo(BaseModel):
    """One attempt at the trial."""

    lease_id: str
    attempt: int
    worker_id: str
    state: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None


class TrialDetail(TrialItem):
    """One trial with its learning curve, metrics, user attributes and lease history."""

    intermediate_values: list[IntermediateValue]
    metrics: list[StepMetrics]
    user_attrs: dict[str, Any]
    distributions: dict[str, str] = Field(
        default_factory=dict,
        description="each parameter's distribution as Optuna stores it (distribution_to_json)",
    )
    leases: list[LeaseInfo]
    findings: list[dict[str, Any]] = Field(
        default_factory=list,
        description="what the diagnosis found in its curves (hpo.findings.Finding as JSON)",
    )
    telemetry: dict[str, Any] | None = Field(
        default=None, description="device utilisation and memory while it ran (mean, peak)"
    )
