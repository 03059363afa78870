"""The rules of a study's label (service.studies.status), one case each."""

from __future__ import annotations

from hpo.protocol import Resources
from hpo.schemas import StudyStatus, TrialCounts, WaitingOn
from hpo.spec import StudySpec
from service.studies.status import Fleet, study_status

SPEC = StudySpec.model_validate(
    {
        "name": "s",
        "workload": "toy",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"max_trials": 4},
        "resources": {"gpus": 1, "gpu_memory_gb": 8},
    }
)
GPU = Resources(gpus=1, gpu_memory_gb=16)


def counts(**n: int) -> TrialCounts:
    shown = ("complete", "pruned", "fail", "running", "waiting", "queued")
    return TrialCounts(**n, total=sum(n.get(k, 0) for k in shown))


def test_complete_when_budget_spent_and_nothing_runs_even_if_paused() -> None:
    done = counts(complete=3, fail=1)
    assert study_status("running", done, SPEC).status == StudyStatus.COMPLETE
    assert study_status("paused", done, SPEC).status == StudyStatus.COMPLETE
    assert study_status("stopped", done, SPEC).status == StudyStatus.STOPPED


def test_running_paused_stopped() -> None:
    busy = counts(complete=3, running=1, leased=1)
    assert study_status("running", busy, SPEC).status == StudyStatus.RUNNING
    assert study_status("paused", busy, SPEC).status == StudyStatus.PAUSED
    assert study_status("stopped", counts(), SPEC).status == StudyStatus.STOPPED


def test_waiting_says_why() -> None:
    fresh = counts(complete=1)
    none = study_status("running", fresh, SPEC, Fleet(()))
    assert (none.status, none.waiting_on, none.reason) == (
        StudyStatus.WAITING,
        WaitingOn.NO_WORKERS,
        "no live worker",
    )
    other = study_status("running", fresh, SPEC, Fleet(((("other",), GPU, False),)))
    assert other.waiting_on == WaitingOn.NO_WORKERS and "'toy'" in (other.reason or "")
    cpu = study_status("running", fresh, SPEC, Fleet(((("toy",), Resources(), False),)))
    assert cpu.waiting_on == WaitingOn.RESOURCES and "has 0" in (cpu.reason or "")
    busy = study_status("running", fresh, SPEC, Fleet(((("toy",), GPU, True),)))
    assert busy.waiting_on == WaitingOn.RESOURCES and "1 busy" in (busy.reason or "")
    stuck = study_status("running", counts(complete=3, running=1), SPEC, Fleet(()))
    assert stuck.waiting_on == WaitingOn.BUDGET  # handed out, no lease on the last one


def test_external_study() -> None:
    assert study_status(None, counts(running=1), None).status == StudyStatus.RUNNING
    assert study_status(None, counts(complete=2), None).status == StudyStatus.COMPLETE
