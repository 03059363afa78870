"""PBT's decisions through the protocol (real app, real Optuna storage, SQLite and
PostgreSQL; the worker's side spoken over HTTP by the test, no training)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from hpo.protocol import TrialOutcome
from service import schedules
from service.storage.models import StudyRecord
from service.storage.schedule_models import SegmentRecord
from tests.conftest import Tokens
from tests.service.lease_helpers import Worker, create_study, optuna_trial, upload_artifact

LR = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}
PBT = {
    "name": "pbt",
    "population_size": 2,
    "perturbation_interval": 1,
    "quantile": 0.5,
    "resample_probability": 0.0,
    "mutations": {"lr": {"factors": [2.0]}},
}


def _end_segment(worker: Worker, trial: dict[str, Any], value: float) -> dict[str, Any]:
    """Checkpoint at step 1, report it (the server says pause), hand the lease back."""
    lease = trial["lease_id"]
    upload_artifact(
        worker, lease, b"weights of %d" % trial["trial_number"], kind="checkpoint", step=1
    )
    assert worker.ok(lease, "report", {"step": 1, "value": value})["action"] == "pause"
    body = {"reason": "paused by the study's schedule", "retry": True, "preempted": True}
    return worker.ok(lease, "fail", body)


def test_the_bottom_member_copies_the_top_ones_checkpoint_and_explores(
    client: Any, tokens: Tokens, ctx: Any
) -> None:
    space = {"space": LR, "fixed": {"epochs": 2, "optimizer": "sgd"}}
    create_study(client, tokens, name="p", schedule=PBT, budget={"max_trials": 4}, **space)
    worker = Worker(client, tokens.worker)
    first, second = worker.trial(), worker.trial()
    assert first["pause_at"] == 1 and first["resume"] is None
    assert worker.lease()["trial"] is None  # the population is running: no third member

    assert _end_segment(worker, first, 0.9)["state"] == "complete"  # alone at step 1: goes on
    assert _end_segment(worker, second, 0.1)["state"] == "complete"  # bottom: copies first

    third, fourth = worker.trial(), worker.trial()
    lr0, lr1 = first["params"]["lr"], second["params"]["lr"]
    # member 0 continues from its own checkpoint with its own params; member 1 exploits
    # member 0 and explores: lr0 x 2
    own, copied = (third, fourth) if third["params"]["lr"] == lr0 else (fourth, third)
    assert own["params"]["lr"] == lr0
    assert copied["params"]["lr"] == pytest.approx(min(0.1, lr0 * 2.0))
    assert lr1 not in (own["params"]["lr"], copied["params"]["lr"])
    assert own["resume"]["inherited_from"] == first["trial_id"]
    assert copied["resume"]["inherited_from"] == first["trial_id"]
    assert copied["resume"]["artifact_id"] == own["resume"]["artifact_id"]
    assert own["pause_at"] is None  # the last segment runs to the end
    attrs = optuna_trial(ctx, copied["trial_id"]).user_attrs
    assert attrs["pbt_member"] == 1 and attrs["pbt_segment"] == 1
    assert attrs["pbt_parent"] == first["trial_number"] and attrs["pbt_start_step"] == 1
    assert attrs["pbt_changed"]["exploited_member"] == 0
    assert attrs["pbt_changed"]["lr"] == [lr0, copied["params"]["lr"]]
    assert optuna_trial(ctx, own["trial_id"]).user_attrs["pbt_changed"] == {}

    # A second decision for the same segment (another replica, a retried end) adds nothing.
    with ctx.db.session() as session:
        before = len(session.scalars(select(SegmentRecord)).all())
    with ctx.db.session() as session:
        record = session.scalars(select(StudyRecord).where(StudyRecord.name == "p")).one()
    schedules.after_finish(ctx, record, second["trial_id"], TrialOutcome.COMPLETE)
    with ctx.db.session() as session:
        rows = session.scalars(select(SegmentRecord)).all()
    assert len(rows) == before == 4
    assert sorted((r.member, r.segment) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_a_paused_trial_frees_its_slot_and_ends_pruned_when_the_study_stops(
    client: Any, tokens: Tokens, ctx: Any
) -> None:
    asha = {"name": "asha", "mode": "promotion", "reduction_factor": 3, "max_resource": 3}
    create_study(
        client,
        tokens,
        name="a",
        schedule=asha,
        budget={"max_trials": 9, "max_concurrent": 1},
        space=LR,
        fixed={"epochs": 3, "optimizer": "sgd"},
    )
    worker = Worker(client, tokens.worker)
    trial = worker.trial()
    assert trial["pause_at"] == 1
    lease = trial["lease_id"]
    upload_artifact(worker, lease, b"rung 0", kind="checkpoint", step=1)
    assert worker.ok(lease, "report", {"step": 1, "value": 0.5})["action"] == "pause"
    body = {"reason": "paused by the study's schedule", "retry": True, "preempted": True}
    assert worker.ok(lease, "fail", body)["state"] == "paused"
    assert worker.ok(lease, "fail", body)["state"] == "paused"  # a retry: the same answer
    admin = Tokens.header(tokens.admin)
    summary = client.get("/api/v1/studies/a", headers=admin).json()
    assert summary["counts"]["paused"] == 1 and summary["counts"]["running"] == 0
    assert worker.trial()["trial_id"] != trial["trial_id"]  # its slot is free (max_concurrent 1)

    assert client.post("/api/v1/studies/a/stop", headers=admin).status_code == 200
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state.name == "PRUNED" and frozen.value == 0.5
