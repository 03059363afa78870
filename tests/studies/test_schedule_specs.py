"""The spec's ``schedule`` key (hpo.schedules): checked at creation, errors name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hpo.spec import StudySpec

LR = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
PBT = {
    "name": "pbt",
    "population_size": 4,
    "perturbation_interval": 2,
    "mutations": {"lr": {"factors": [0.8, 1.25]}},
}


def spec(schedule: dict[str, Any], **extra: Any) -> StudySpec:
    body = {"name": "s", "space": LR, "fixed": {"epochs": 4}, "schedule": schedule, **extra}
    return StudySpec.model_validate(body)


def test_pbt_and_asha_specs_validate() -> None:
    pbt = spec(PBT).schedule
    assert pbt is not None and pbt.name == "pbt"
    asha = spec({"name": "asha", "mode": "promotion", "max_resource": 4}, budget={"max_trials": 9})
    assert asha.schedule is not None and asha.schedule.rung_steps == [1, 3, 4]  # type: ignore[union-attr]
    assert asha.schedule.top_rung_size(9) == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("schedule", "extra", "field"),
    [
        ({**PBT, "mutations": {"momentum": {"factors": [2.0]}}}, {}, "schedule.mutations.momentum"),
        ({**PBT, "perturbation_interval": 4}, {}, "schedule.perturbation_interval"),
        (PBT, {"budget": {"max_trials": 7}}, "budget.max_trials"),
        (PBT, {"workload": "own"}, "schedule.workload_checkpoints"),
        (PBT, {"pruner": {"name": "median"}}, "pruner"),
        (PBT, {"fixed": {"epochs": 4, "lr_schedule": "cosine"}}, "schedule.mutations.lr"),
        ({"name": "asha", "max_resource": 9}, {}, "schedule.max_resource"),
        (
            {"name": "asha", "max_resource": 4},
            {"fixed": {"epochs": 4, "checkpoint_every": 0}},
            "fixed.checkpoint_every",
        ),
        ({"name": "asha", "max_resource": 4, "rungs": [2, 1, 4]}, {}, "rungs"),
        ({"name": "asha", "mode": "stopping", "max_resource": 4}, {}, "mode"),
        ({**PBT, "mutations": {"lr": {}}}, {}, "factors or resample"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    schedule: dict[str, Any], extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        spec(schedule, **extra)
    assert field in str(err.value)


def test_an_own_workload_that_checkpoints_may_use_a_schedule() -> None:
    own = {**PBT, "workload_checkpoints": True}
    assert spec(own, workload="own", budget={"max_trials": 8}).schedule is not None
