"""The trial protocol's recovery paths, on SQLite and PostgreSQL (``db_url``).

Leases stuck in ``finishing``, expired leases and re-runs (same Optuna trial,
next attempt), retries used up, abandon, orphans left by a dying server and
sampling failures: nothing lost, nothing run twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

import optuna
import pytest
from sqlalchemy import func, select, update

from hpo.protocol import CompleteRequest, FailRequest
from service import trials
from service.core.db import utcnow
from service.storage.models import LeaseRecord, TrialMetric, TrialRecord
from service.trials import finishing, leasing
from tests.conftest import Tokens
from tests.service.lease_helpers import (
    Worker,
    create_study,
    expire_and_reap,
    lease_row,
    optuna_trial,
    optuna_trials,
    trial_rows,
)

TS = optuna.trial.TrialState


def _lease_and_die(
    client: Any, tokens: Tokens, worker: Worker, step: str, finish: Callable[[str], object]
) -> tuple[dict[str, Any], str]:
    """Lease a trial of a new study, then ``finish(lease_id)`` with ``finishing.<step>``
    raising, as if the server died right there; the trial and its lease id."""
    create_study(client, tokens)
    trial = worker.trial()

    def crash(*_a: object, **_k: object) -> NoReturn:
        raise RuntimeError("server died")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finishing, step, crash)
        with pytest.raises(RuntimeError):
            finish(trial["lease_id"])
    return trial, trial["lease_id"]


# --------------------------------------------------------------------------- finishing recovery


def test_retried_complete_finishes_a_lease_stuck_in_finishing(
    client, tokens, ctx, worker: Worker
) -> None:
    def complete(lid: str) -> object:
        return trials.complete(ctx, lid, CompleteRequest(value=0.6))

    # the server dies after telling Optuna
    trial, lid = _lease_and_die(client, tokens, worker, "_record", complete)
    assert lease_row(ctx, lid).state == "finishing"
    assert optuna_trial(ctx, trial["trial_id"]).state == TS.COMPLETE
    # The retry carries another value: the stored request wins, nothing changes.
    done = worker.ok(lid, "complete", {"value": 0.2})
    assert done["state"] == "complete" and done["value"] == 0.6
    assert lease_row(ctx, lid).state == "completed"
    assert trial_rows(ctx, "s1")[0].state == "finished"


def test_reaper_finishes_a_lease_stuck_before_tell(client, tokens, ctx, worker: Worker) -> None:
    def fail(lid: str) -> object:
        return trials.fail(ctx, lid, FailRequest(reason="oom"))

    # the server dies before telling Optuna
    trial, lid = _lease_and_die(client, tokens, worker, "_tell", fail)
    assert optuna_trial(ctx, trial["trial_id"]).state == TS.RUNNING
    assert trials.reap_all(ctx) == 0  # within the grace period: maybe still in flight
    with ctx.db.session() as session:
        session.execute(
            update(LeaseRecord)
            .where(LeaseRecord.lease_id == lid)
            .values(ended_at=utcnow() - timedelta(hours=1))
        )
    assert trials.reap_all(ctx) == 1
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state == TS.FAIL and frozen.user_attrs["fail_reason"] == "oom"
    assert worker.ok(lid, "fail", {"reason": "oom"})["state"] == "fail"


# --------------------------------------------------------------------------- expiry, re-runs


def test_expired_lease_is_rerun_with_the_same_trial(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    first = worker.trial()
    worker.ok(first["lease_id"], "report", {"step": 0, "value": 0.4})
    assert expire_and_reap(ctx, first["lease_id"]) == 1
    assert lease_row(ctx, first["lease_id"]).state == "expired"
    other = Worker(client, tokens.worker)
    second = other.trial()
    for key in ("trial_id", "trial_number", "params", "seed"):
        assert second[key] == first[key], key
    assert second["attempt"] == 2 and second["lease_id"] != first["lease_id"]
    old = first["lease_id"]
    for verb, body in [
        ("report", {"step": 1, "value": 0.5}),
        ("heartbeat", {}),
        ("complete", {"value": 0.5}),
        ("fail", {"reason": "x"}),
    ]:
        response = worker.post(old, verb, body)
        assert response.status_code == 409, (verb, response.text)
        assert "attempt 2" in response.json()["detail"]
    other.ok(second["lease_id"], "report", {"step": 0, "value": 0.45})
    other.ok(second["lease_id"], "complete", {"value": 0.55})
    [frozen] = optuna_trials(ctx, "s1")
    assert frozen.state == TS.COMPLETE and frozen.value == 0.55
    assert frozen.intermediate_values == {0: 0.45}
    [row] = trial_rows(ctx, "s1")
    assert row.attempts == 2 and row.state == "finished"
    with ctx.db.session() as session:
        [metric] = session.scalars(select(TrialMetric)).all()
    assert (metric.attempt, metric.value) == (2, 0.45)
    assert "hpo_leases_expired_total 1.0" in client.get("/metrics").text
    # The trial is finished now: the stale lease hears "trial finished".
    response = worker.post(old, "complete", {"value": 0.5})
    assert response.status_code == 409 and "already finished" in response.json()["detail"]


def test_expired_but_not_reclaimed_is_accepted(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 1})
    trial = worker.trial()
    expire_and_reap(ctx, trial["lease_id"])
    assert trial_rows(ctx, "s1")[0].state == "queued"
    done = worker.ok(trial["lease_id"], "complete", {"value": 0.9})
    assert done["state"] == "complete"
    assert worker.lease()["trial"] is None  # nothing left to re-run
    [frozen] = optuna_trials(ctx, "s1")
    assert frozen.state == TS.COMPLETE and frozen.value == 0.9


def test_expired_lease_heartbeat_revives_it(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    expire_and_reap(ctx, trial["lease_id"])
    answer = worker.ok(trial["lease_id"], "heartbeat")
    assert answer["action"] == "continue"
    assert lease_row(ctx, trial["lease_id"]).state == "active"
    assert trial_rows(ctx, "s1")[0].state == "leased"
    assert worker.trial()["trial_id"] != trial["trial_id"]  # not handed out again


def test_reaper_fails_after_max_retries(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 1, "max_retries": 1})
    first = worker.trial()
    expire_and_reap(ctx, first["lease_id"])
    second = worker.trial()
    assert second["attempt"] == 2
    expire_and_reap(ctx, second["lease_id"])
    frozen = optuna_trial(ctx, first["trial_id"])
    assert frozen.state == TS.FAIL
    assert frozen.user_attrs["fail_reason"].startswith("lease expired 2 times (worker lost)")
    [row] = trial_rows(ctx, "s1")
    assert row.final_state == "fail" and "worker lost" in (row.fail_reason or "")
    assert "budget used" in worker.lease()["reason"]
    assert worker.ok(second["lease_id"], "heartbeat")["action"] == "stop"


def test_abandon_reruns_at_once(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 1, "max_retries": 1})
    first = worker.trial()
    answer = worker.ok(first["lease_id"], "fail", {"reason": "worker shutting down", "retry": True})
    assert answer["state"] == "queued"
    assert worker.ok(first["lease_id"], "fail", {"reason": "again", "retry": True}) == answer
    assert lease_row(ctx, first["lease_id"]).state == "abandoned"
    second = worker.trial()
    assert (second["trial_id"], second["attempt"]) == (first["trial_id"], 2)
    assert worker.post(first["lease_id"], "heartbeat").status_code == 409
    # No retries left: abandoning again fails the trial with the reason.
    last = worker.ok(second["lease_id"], "fail", {"reason": "device error", "retry": True})
    assert last["state"] == "fail"
    reason = optuna_trial(ctx, first["trial_id"]).user_attrs["fail_reason"]
    assert "device error" in reason and "max_retries=1" in reason


# --------------------------------------------------------------------------- orphans


def test_reaper_cleans_orphans(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    study_id = ctx.store.storage.get_study_id_from_name("s1")
    now = utcnow()
    old = now - timedelta(hours=1)
    with ctx.db.session() as session:
        session.add(
            TrialRecord(
                study_id=study_id, state="creating", attempts=0, created_at=old, updated_at=old
            )
        )
    orphan = ctx.store.storage.create_new_trial(study_id)  # RUNNING, no row
    assert trials.reap_all(ctx) == 1  # the stale creating row; the orphan is too young
    assert optuna_trial(ctx, orphan).state == TS.RUNNING
    ctx.settings.orphan_grace_s = 0.01
    time.sleep(0.05)
    assert trials.reap_all(ctx) == 1  # now the orphan
    frozen = optuna_trial(ctx, orphan)
    assert frozen.state == TS.FAIL and "orphaned" in frozen.user_attrs["fail_reason"]
    assert trial_rows(ctx, "s1") == []


def test_sampling_failure_leaves_no_running_trial(client, tokens, ctx, worker, monkeypatch) -> None:
    create_study(client, tokens)

    def broken(*_a, **_k):
        raise ValueError("bad space")

    monkeypatch.setattr(leasing, "suggest_params", broken)
    answer = worker.lease()
    assert answer["trial"] is None and "sampling failed" in answer["reason"]
    [frozen] = optuna_trials(ctx, "s1")
    assert frozen.state == TS.FAIL and "bad space" in frozen.user_attrs["fail_reason"]
    [row] = trial_rows(ctx, "s1")
    assert row.state == "finished" and row.final_state == "fail"


def test_lease_rows_stay_consistent(client, tokens, ctx, worker: Worker) -> None:
    """Every lease row points at a trial row; a trial's current lease is its newest."""
    create_study(client, tokens)
    a = worker.trial()
    expire_and_reap(ctx, a["lease_id"])
    b = worker.trial()
    with ctx.db.session() as session:
        count = session.scalar(select(func.count()).select_from(LeaseRecord))
        row = session.scalar(
            select(TrialRecord).where(TrialRecord.optuna_trial_id == a["trial_id"])
        )
    assert count == 2 and row is not None and row.lease_id == b["lease_id"]
