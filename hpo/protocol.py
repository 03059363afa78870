"""The wire contract between the server and the worker daemons.

This module is imported by both sides (``service`` and ``workers``), so it stays
free of torch and of every server-only dependency (fastapi, sqlalchemy, alembic,
optuna): pydantic only. Every request and answer body of the trial protocol
lives here.

Protocol (all under ``/api/v1``, bearer token with role ``worker`` or ``admin``):

==========================  =========================================  ======================
endpoint                    body                                       answer
==========================  =========================================  ======================
POST /workers/register      :class:`WorkerRegistration`                :class:`WorkerInfo`
POST /trials/lease          :class:`LeaseRequest`                      :class:`LeaseResponse`
POST /leases/{id}/heartbeat :class:`HeartbeatRequest`                  :class:`ActionResponse`
POST /leases/{id}/report    :class:`ReportRequest`                     :class:`ActionResponse`
POST /leases/{id}/suggest   :class:`SuggestRequest`                    :class:`SuggestResponse`
POST /leases/{id}/complete  :class:`CompleteRequest`                   :class:`FinishResponse`
POST /leases/{id}/fail      :class:`FailRequest`                       :class:`FinishResponse`
PUT  /leases/{id}/artifacts the file's bytes (query: kind, step, ...)  :class:`ArtifactInfo`
POST /leases/{id}/resume    :class:`CheckpointRejected`                :class:`ResumeAnswer`
==========================  =========================================  ======================

Artifacts (checkpoints, final models, user files) are uploaded through the
lease, so a worker writes only to trials it holds; their metadata is Optuna's
own (system attribute ``artifacts:<id>``). A checkpoint becomes the trial's
latest only once its whole upload has arrived and its hash matched; a re-run
gets it as :attr:`TrialSpec.resume`.

``complete`` and ``fail`` are idempotent per lease: a retried request gets the
same :class:`FinishResponse` and changes nothing.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, field_validator

from hpo.settings import REFERENCE_WORKLOAD

#: Route prefixes: the REST API, and the dashboard's pages (its JSON API is under both).
API_PREFIX = "/api/v1"
DASHBOARD_PREFIX = "/dashboard"

#: Upper bound on a metric name's length and on the number of metrics per report.
MAX_METRIC_NAME = 64
MAX_METRICS = 64


class Action(StrEnum):
    """What the server tells a worker to do with its current trial."""

    CONTINUE = "continue"
    PRUNE = "prune"  # stop training, then call complete with state=pruned
    STOP = "stop"  # the study was stopped or the lease is gone: drop the trial
    PAUSE = "pause"  # a schedule (PBT, ASHA): checkpoint, hand the lease back (preempted)


class FinishState(StrEnum):
    """How a worker ends a trial it completed."""

    COMPLETE = "complete"
    PRUNED = "pruned"


class TrialOutcome(StrEnum):
    """A trial's state after complete or fail, as the wire reports it."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    QUEUED = "queued"  # the attempt was abandoned; the trial runs again elsewhere
    PAUSED = "paused"  # handed back at a rung (promotion ASHA): leased again when promoted


class NoWorkCode(StrEnum):
    """Why a lease request got no trial (one code per study that had none)."""

    NO_STUDY = "no_study"  # no study at all, or none of the names asked for exists
    PAUSED = "paused"
    STOPPED = "stopped"
    BUDGET_USED = "budget_used"
    CONCURRENCY_FULL = "concurrency_full"  # max_concurrent trials are running
    SAMPLING_FAILED = "sampling_failed"
    BUSY = "busy"  # another request took the slot or re-run first
    DELETED = "deleted"
    NOT_MATCHED = "not_matched"  # another workload, or resources this worker lacks

    @property
    def retry_soon(self) -> bool:
        """True when work may appear within a second or so (a slot frees, a race lost)."""
        return self in (NoWorkCode.CONCURRENCY_FULL, NoWorkCode.SAMPLING_FAILED, NoWorkCode.BUSY)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _finite(value: float | None, field: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value}")
    return value


def _check_metrics(metrics: dict[str, float | int | str | None]) -> dict[str, Any]:
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"at most {MAX_METRICS} metrics per report, got {len(metrics)}")
    for name, value in metrics.items():
        if not name or len(name) > MAX_METRIC_NAME:
            raise ValueError(f"metric name must be 1..{MAX_METRIC_NAME} characters: {name!r}")
        if isinstance(value, float) and not math.isfinite(value):
            # NaN/Inf are not JSON; the worker sends them as null plus a diagnosis.
            raise ValueError(f"metric {name!r} must be finite, got {value}")
        if isinstance(value, str) and len(value) > 1000:
            raise ValueError(f"metric {name!r} is longer than 1000 characters")
    return metrics


def _check_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    for key, value in attrs.items():
        if not key or len(key) > MAX_METRIC_NAME:
            raise ValueError(f"user attribute name must be 1..{MAX_METRIC_NAME} characters")
        if len(json.dumps(value, allow_nan=False, default=str)) > 10_000:
            raise ValueError(f"user attribute {key!r} is larger than 10,000 characters as JSON")
    return attrs


#: Free-form metrics of a report or a completion: names and values checked.
Metrics = Annotated[dict[str, float | int | str | None], AfterValidator(_check_metrics)]
#: User attributes a worker sends with a trial's end: at most 64, names and sizes checked.
UserAttrs = Annotated[dict[str, Any], Field(max_length=64), AfterValidator(_check_attrs)]


# --------------------------------------------------------------------------- workers

#: A workload name: what a study's trials run and what a worker can run.
WorkloadName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class Resources(_Body):
    """What a trial needs, or what a worker process has (GPUs and their memory)."""

    gpus: int = Field(
        default=0, strict=True, ge=0, le=64, description="GPUs (a trial's, or a worker's)"
    )
    gpu_memory_gb: float = Field(
        default=0.0, strict=True, ge=0.0, le=4096.0, description="memory per GPU, in GiB"
    )

    def covers(self, need: Resources) -> bool:
        """True when these resources are enough for ``need``."""
        if need.gpus == 0:
            return True
        return self.gpus >= need.gpus and self.gpu_memory_gb >= need.gpu_memory_gb


class WorkerRegistration(_Body):
    """Sent once when a worker daemon (or one of its GPU processes) starts."""

    hostname: str = Field(min_length=1, max_length=255)
    devices: list[str] = Field(default_factory=list, max_length=64)
    version: str = Field(default="", max_length=64)
    name: str | None = Field(default=None, max_length=255, description="e.g. host:gpu0")
    workloads: list[WorkloadName] = Field(
        default_factory=lambda: [REFERENCE_WORKLOAD],
        min_length=1,
        max_length=32,
        description="the workloads this worker runs (the built-in trainer by default)",
    )
    resources: Resources = Field(default_factory=Resources)


class WorkerInfo(BaseModel):
    """A registered worker as the registry sees it."""

    worker_id: str
    hostname: str
    name: str | None = None
    devices: list[str] = Field(default_factory=list)
    version: str = ""
    registered_at: datetime
    last_seen_at: datetime
    current_trial_id: int | None = None
    current_study: str | None = None
    alive: bool = True
    workloads: list[str] = Field(default_factory=lambda: [REFERENCE_WORKLOAD])
    resources: Resources = Field(default_factory=Resources)


# --------------------------------------------------------------------------- leasing


class LeaseRequest(_Body):
    """Ask for one trial to run."""

    worker_id: str = Field(min_length=1, max_length=64)
    studies: list[str] | None = Field(
        default=None, max_length=100, description="study names to take work from (default: any)"
    )
    wait_s: float = Field(
        default=0.0,
        strict=True,
        ge=0.0,
        le=30.0,
        description="long-poll: wait up to this long for work",
    )
    max_trials: int = Field(
        default=1,
        strict=True,
        ge=1,
        le=64,
        description="batch lease: up to this many trials at once (fused packs), each with "
        "its own lease",
    )
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="client request id, fresh per logical request and the same on its "
        "retries: a retry gets the first attempt's trials back, never a second set",
    )


class ArtifactKind(StrEnum):
    """What an artifact of a trial is."""

    CHECKPOINT = "checkpoint"  # training state at a step; a re-run resumes from the latest
    MODEL = "model"  # the trained model of a COMPLETE trial
    FILE = "file"  # anything else an objective uploads (trial.upload_artifact)


#: Request header of an artifact upload: the file's SHA-256 (hex), checked on arrival.
SHA256_HEADER = "X-HPO-SHA256"


class Checkpoint(BaseModel):
    """A committed checkpoint: where a re-run of its trial continues from."""

    artifact_id: str
    step: int = Field(description="the step (epoch) of the last report it includes")
    size: int = Field(description="bytes")
    sha256: str
    inherited_from: int | None = Field(
        default=None,
        description="the Optuna trial that wrote it, when it is another trial's (a PBT "
        "segment starts from its parent's checkpoint, with its own params)",
    )


class ArtifactInfo(BaseModel):
    """One file kept with a trial (or a study)."""

    artifact_id: str
    study_name: str
    trial_id: int | None = Field(default=None, description="Optuna trial id (None: study's)")
    trial_number: int | None = None
    kind: ArtifactKind
    filename: str
    mimetype: str = "application/octet-stream"
    step: int | None = None
    size: int | None = Field(default=None, description="bytes (None: unknown, plain Optuna)")
    sha256: str | None = None
    created_at: datetime | None = None
    source: str = Field(default="hpo", description="hpo, or optuna (uploaded by Optuna code)")


class CheckpointRejected(_Body):
    """A worker could not use the checkpoint it was given (corrupt, unreadable)."""

    artifact_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


class ResumeAnswer(BaseModel):
    """The checkpoint to try next after a rejected one (None: start afresh)."""

    resume: Checkpoint | None = None


class TrialSpec(BaseModel):
    """Everything a worker needs to run one trial attempt."""

    lease_id: str
    trial_id: int
    trial_number: int
    study_name: str
    attempt: int = Field(description="1 for the first run, 2 after one expired lease, ...")
    workload: str = Field(default=REFERENCE_WORKLOAD, description="what the trial runs")
    params: dict[str, Any] = Field(
        description="values sampled by the study's sampler, by parameter name (as Optuna's)"
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="fixed settings plus the params under their setting names (setting: ...)",
    )
    fixed: dict[str, Any] = Field(default_factory=dict, description="the spec's fixed settings")
    space: dict[str, Any] | None = Field(
        default=None,
        description="the study's declared parameters (None: define-by-run, ask with /suggest)",
    )
    objective: str = Field(description="metric name whose value is the (first) objective")
    direction: str = Field(description="maximize or minimize")
    objectives: list[str] = Field(default_factory=list, description="every objective's name")
    directions: list[str] = Field(default_factory=list, description="every objective's direction")
    seed: int = Field(description="trial seed: derived from the study seed and trial number")
    resume: Checkpoint | None = Field(
        default=None, description="the latest checkpoint of an earlier attempt (None: fresh)"
    )
    pause_at: int | None = Field(
        default=None,
        description="a schedule's next pause (PBT segment end, ASHA rung): the step after "
        "which the trial is handed back; a resume at or past it hands back at once",
    )
    lease_expires_at: datetime
    heartbeat_interval_s: float


class NoWork(BaseModel):
    """Why one study (or the whole request) had no trial to hand out."""

    code: NoWorkCode
    message: str
    study: str | None = None


class LeaseResponse(BaseModel):
    """Trials to run, or none (a normal answer: retry after ``retry_after_s``).

    ``trials`` holds every trial leased (up to the request's ``max_trials``);
    ``trial`` is the first of them, for workers that lease one at a time.
    """

    trial: TrialSpec | None = None
    trials: list[TrialSpec] = Field(default_factory=list)
    retry_after_s: float = 0.0
    reason: str | None = Field(
        default=None, description="why there is no work, in words (the messages of ``reasons``)"
    )
    reasons: list[NoWork] = Field(
        default_factory=list, description="why there is no work, one entry per study"
    )


# --------------------------------------------------------------------------- running


class SuggestRequest(_Body):
    """Define-by-run: sample one parameter on the trial with the study's sampler.

    ``distribution`` has the shape of a spec parameter (``type`` float, int or
    categorical, with low/high/log/step or choices). Asking again for a parameter
    the trial already has (a re-run after a lost lease) returns the recorded value.
    """

    name: str = Field(min_length=1, max_length=128)
    distribution: dict[str, Any]


class SuggestResponse(BaseModel):
    """The value of the parameter for this trial."""

    name: str
    value: Any


def _check_telemetry(values: dict[str, float]) -> dict[str, float]:
    for name, value in values.items():
        if len(name) > MAX_METRIC_NAME or not math.isfinite(value):
            raise ValueError(f"telemetry {name!r}: a short name and a finite number, got {value}")
    return values


Telemetry = Annotated[
    dict[str, float],
    Field(max_length=32, description="device utilisation and memory figures (see workers)"),
    AfterValidator(_check_telemetry),
]


class HeartbeatRequest(_Body):
    """Keeps a lease alive; may carry the latest progress and device telemetry."""

    progress: float | None = Field(default=None, strict=True, ge=0.0, le=1.0)
    telemetry: Telemetry | None = None


class ReportRequest(_Body):
    """One intermediate objective value (per epoch) plus free-form metrics."""

    step: int = Field(strict=True, ge=0, le=1_000_000)
    value: float = Field(strict=True)
    metrics: Metrics = Field(default_factory=dict)

    @field_validator("value")
    @classmethod
    def _value_finite(cls, v: float) -> float:
        return _finite(v, "value")  # type: ignore[return-value]


class ActionResponse(BaseModel):
    """Answer to heartbeat and report."""

    action: Action
    lease_expires_at: datetime | None = None
    message: str | None = None


class CompleteRequest(_Body):
    """The trial ended normally (or was pruned at the server's request)."""

    state: FinishState = FinishState.COMPLETE
    value: float | None = Field(
        default=None,
        strict=True,
        description="objective value; for pruned trials the last reported value",
    )
    values: list[StrictFloat] | None = Field(
        default=None,
        max_length=8,
        description="every objective's value (multi-objective studies); value is values[0]",
    )
    metrics: Metrics = Field(default_factory=dict)
    diagnosis: str | None = Field(default=None, max_length=200, description="e.g. diverged")
    user_attrs: UserAttrs = Field(
        default_factory=dict, description="stored as the trial's user attributes"
    )
    telemetry: Telemetry | None = Field(default=None, description="utilisation over the trial")

    @field_validator("value")
    @classmethod
    def _value_finite(cls, v: float | None) -> float | None:
        return _finite(v, "value")

    @field_validator("values")
    @classmethod
    def _values_finite(cls, v: list[float] | None) -> list[float] | None:
        for i, value in enumerate(v or []):
            _finite(value, f"values[{i}]")
        return v


class FailRequest(_Body):
    """The trial could not run.

    ``retry=True`` abandons the attempt (worker shutting down, device error): the
    trial goes back to the queue at once and is run again elsewhere. ``retry=False``
    fails the trial for good (bad settings): the reason is stored with it.
    """

    reason: str = Field(min_length=1, max_length=2000)
    retry: bool = False
    preempted: bool = Field(
        default=False,
        description="with retry: the worker was preempted (SIGTERM); the attempt is not "
        "counted as a retry",
    )
    diagnosis: str | None = Field(default=None, max_length=200)
    user_attrs: UserAttrs = Field(default_factory=dict)
    telemetry: Telemetry | None = None


class FinishResponse(BaseModel):
    """Answer to complete and fail; identical for a retried request."""

    trial_id: int
    trial_number: int
    state: TrialOutcome = Field(description="the trial's state now")
    value: float | None = None
