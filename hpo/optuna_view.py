"""The wire contract of ``trial.study``: a leased trial's read-only view of its study.

An objective's ``trial.study`` (and ``trial.storage``) is Optuna's ``Study`` over a
storage that reads these bodies from the server through the trial's lease (see
:mod:`hpo.optuna_compat`), so integration callbacks that read
``trial.study.direction`` or ``best_value`` run unchanged with no database URL on
the worker. Writes go through the trial: user attributes with its result, and the
system attributes Optuna's trial writes itself (``constraints:<key>``) at once.

Times are Optuna's own: naive datetimes in the server's local time, as Optuna
stores them. Values that JSON cannot carry (NaN, infinities) travel as None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from hpo.constraints import CONSTRAINT_PREFIX

#: Optuna's system-attribute prefix of an artifact's metadata (``artifacts:<id>``).
ARTIFACT_PREFIX = "artifacts:"
#: System attributes an objective may set through its lease (Optuna's trial writes these).
WRITABLE_SYSTEM_PREFIXES = (CONSTRAINT_PREFIX,)
MAX_ATTRS = 64


class FrozenTrialBody(BaseModel):
    """One trial as Optuna's ``FrozenTrial`` holds it."""

    number: int
    trial_id: int
    state: str = Field(description="Optuna's TrialState name, e.g. COMPLETE")
    values: list[float | None] | None = None
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    distributions: dict[str, str] = Field(
        default_factory=dict, description="Optuna's distribution_to_json, by parameter"
    )
    user_attrs: dict[str, Any] = Field(default_factory=dict)
    system_attrs: dict[str, Any] = Field(default_factory=dict)
    intermediate_values: dict[int, float | None] = Field(default_factory=dict)


class StudyViewBody(BaseModel):
    """The study of a lease: what Optuna's ``Study`` reads besides its trials."""

    study_name: str
    study_id: int
    trial_id: int = Field(description="the lease's own trial (Optuna's trial id)")
    directions: list[str] = Field(description="Optuna's StudyDirection names, e.g. MAXIMIZE")
    user_attrs: dict[str, Any] = Field(default_factory=dict)
    system_attrs: dict[str, Any] = Field(default_factory=dict)


class StudyTrialsBody(BaseModel):
    """The study's trials, by number (states: Optuna's names; all when not filtered)."""

    trials: list[FrozenTrialBody]


class TrialAttrsRequest(BaseModel):
    """Attributes of the lease's own trial, written now (not with its result)."""

    model_config = {"extra": "forbid"}

    user_attrs: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ATTRS)
    system_attrs: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_ATTRS,
        description=f"only keys starting with {', '.join(WRITABLE_SYSTEM_PREFIXES)}",
    )
