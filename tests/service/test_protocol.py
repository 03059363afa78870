"""The trial protocol end to end over HTTP, on SQLite and PostgreSQL (``db_url``).

lease -> heartbeat/report -> complete/fail; pruning; idempotency; pause/stop;
budget and concurrency; long-poll; error codes; auth. Expiry, re-runs and
recovery are in test_protocol_recovery.py.
"""

from __future__ import annotations

import threading
import time

import optuna
from sqlalchemy import select

from service import trials
from service.storage.models import TrialMetric, WorkerRecord
from tests.conftest import Tokens
from tests.service.lease_helpers import (
    API,
    Worker,
    create_study,
    expire_and_reap,
    lease_row,
    optuna_trial,
    set_state,
    trial_rows,
)

TS = optuna.trial.TrialState


# --------------------------------------------------------------------------- happy paths


def test_lease_report_complete(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    assert trial["attempt"] == 1 and trial["study_name"] == "s1"
    assert trial["fixed"] == {"epochs": 3, "batch_size": 64}
    assert trial["objective"] == "val_accuracy" and trial["direction"] == "maximize"
    assert trial["heartbeat_interval_s"] == 5.0
    assert {"optimizer", "lr"} <= set(trial["params"])
    lid = trial["lease_id"]
    assert worker.ok(lid, "heartbeat")["action"] == "continue"
    for step in range(3):
        body = {"step": step, "value": 0.5 + step / 10, "metrics": {"loss": 1.0 - step / 10}}
        assert worker.ok(lid, "report", body)["action"] == "continue"
    done = worker.ok(lid, "complete", {"value": 0.8, "metrics": {"test_accuracy": 0.79}})
    assert done == {
        "trial_id": trial["trial_id"],
        "trial_number": trial["trial_number"],
        "state": "complete",
        "value": 0.8,
    }
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state == TS.COMPLETE and frozen.value == 0.8
    assert frozen.intermediate_values == {0: 0.5, 1: 0.6, 2: 0.7}
    assert frozen.user_attrs["final_metrics"] == {"test_accuracy": 0.79}
    assert frozen.params == {k: v for k, v in trial["params"].items()}
    with ctx.db.session() as session:
        metrics = session.scalars(select(TrialMetric).order_by(TrialMetric.step)).all()
        me = session.get(WorkerRecord, worker.worker_id)
        assert me is not None and me.current_trial_id is None
    assert [(m.step, m.attempt, m.metrics["loss"]) for m in metrics] == [
        (0, 1, 1.0),
        (1, 1, 0.9),
        (2, 1, 0.8),
    ]
    [row] = trial_rows(ctx, "s1")
    assert (row.state, row.final_state, row.value, row.attempts) == ("finished", "complete", 0.8, 1)
    assert lease_row(ctx, lid).state == "completed"
    text = client.get("/metrics").text
    assert "hpo_leases_granted_total 1.0" in text
    assert 'hpo_trials_finished_total{state="complete"} 1.0' in text


def test_workers_registry_api(client, tokens, worker: Worker) -> None:
    viewer = Tokens.header(tokens.viewer)
    listing = client.get(f"{API}/workers", headers=viewer)
    assert listing.status_code == 200
    [info] = listing.json()
    assert info["worker_id"] == worker.worker_id and info["alive"] is True
    assert info["devices"] == ["cuda:0"] and info["name"] == "box:0"
    create_study(client, tokens)
    trial = worker.trial()
    one = client.get(f"{API}/workers/{worker.worker_id}", headers=viewer).json()
    assert one["current_trial_id"] == trial["trial_id"] and one["current_study"] == "s1"
    missing = client.get(f"{API}/workers/nope", headers=viewer)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    bad = client.post(f"{API}/workers/register", json={}, headers=Tokens.header(tokens.worker))
    assert bad.status_code == 422


def test_prune_path(client, tokens, ctx, worker: Worker) -> None:
    pruner = {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 0}}
    create_study(client, tokens, pruner=pruner)
    for _ in range(3):
        trial = worker.trial()
        for step in range(3):
            answer = worker.ok(trial["lease_id"], "report", {"step": step, "value": 0.9})
            assert answer["action"] == "continue"
        worker.ok(trial["lease_id"], "complete", {"value": 0.9})
    bad = worker.trial()
    answer = worker.ok(bad["lease_id"], "report", {"step": 0, "value": 0.1})
    assert answer["action"] == "prune" and "step 0" in answer["message"]
    done = worker.ok(bad["lease_id"], "complete", {"state": "pruned", "value": 0.1})
    assert done["state"] == "pruned" and done["value"] == 0.1
    frozen = optuna_trial(ctx, bad["trial_id"])
    assert frozen.state == TS.PRUNED and frozen.value == 0.1
    assert trial_rows(ctx, "s1")[-1].final_state == "pruned"


def test_pruned_without_reports_keeps_given_value(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    done = worker.ok(trial["lease_id"], "complete", {"state": "pruned", "value": 0.3})
    assert done["state"] == "pruned" and done["value"] == 0.3
    assert optuna_trial(ctx, trial["trial_id"]).state == TS.PRUNED


def test_fail_path(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    body = {"reason": "bad settings: lr too large", "diagnosis": "bad_settings"}
    done = worker.ok(trial["lease_id"], "fail", body)
    assert done["state"] == "fail" and done["value"] is None
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state == TS.FAIL
    assert frozen.user_attrs["fail_reason"] == "bad settings: lr too large"
    assert frozen.user_attrs["diagnosis"] == "bad_settings"
    [row] = trial_rows(ctx, "s1")
    assert row.fail_reason == "bad settings: lr too large" and row.diagnosis == "bad_settings"
    assert lease_row(ctx, trial["lease_id"]).state == "failed"


def test_complete_stores_diagnosis(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    worker.ok(trial["lease_id"], "complete", {"value": 0.1, "diagnosis": "diverged"})
    assert optuna_trial(ctx, trial["trial_id"]).user_attrs["diagnosis"] == "diverged"
    assert trial_rows(ctx, "s1")[0].diagnosis == "diverged"


def test_complete_without_value_is_422(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    response = worker.post(trial["lease_id"], "complete", {"state": "complete"})
    assert response.status_code == 422 and response.json()["field"] == "value"
    assert lease_row(ctx, trial["lease_id"]).state == "active"


# --------------------------------------------------------------------------- idempotency


def test_complete_is_idempotent(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    lid = trial["lease_id"]
    first = worker.ok(lid, "complete", {"value": 0.7})
    before = optuna_trial(ctx, trial["trial_id"])
    assert worker.ok(lid, "complete", {"value": 0.7}) == first
    assert worker.ok(lid, "complete", {"value": 0.1, "diagnosis": "x"}) == first
    assert worker.ok(lid, "complete", {"state": "pruned"}) == first
    assert worker.ok(lid, "fail", {"reason": "late"}) == first
    assert worker.ok(lid, "fail", {"reason": "late", "retry": True}) == first
    after = optuna_trial(ctx, trial["trial_id"])
    assert (after.state, after.value, after.user_attrs) == (
        before.state,
        before.value,
        before.user_attrs,
    )
    assert len(trial_rows(ctx, "s1")) == 1
    text = client.get("/metrics").text
    assert 'hpo_trials_finished_total{state="complete"} 1.0' in text


def test_fail_is_idempotent(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    lid = trial["lease_id"]
    first = worker.ok(lid, "fail", {"reason": "boom"})
    assert worker.ok(lid, "fail", {"reason": "boom"}) == first
    assert worker.ok(lid, "fail", {"reason": "other", "retry": True}) == first
    assert worker.ok(lid, "complete", {"value": 0.9}) == first
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state == TS.FAIL and frozen.user_attrs["fail_reason"] == "boom"


def test_concurrent_completes_tell_optuna_once(client, tokens, ctx, worker: Worker) -> None:
    from hpo.protocol import CompleteRequest

    create_study(client, tokens)
    trial = worker.trial()
    answers: list[object] = []

    def go(value: float) -> None:
        try:
            answers.append(trials.complete(ctx, trial["lease_id"], CompleteRequest(value=value)))
        except Exception as exc:  # noqa: BLE001
            answers.append(exc)

    threads = [threading.Thread(target=go, args=(0.1 * i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a.model_dump_json() for a in answers}) == 1, answers  # type: ignore[union-attr]
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state == TS.COMPLETE and frozen.value == answers[0].value  # type: ignore[union-attr]


# --------------------------------------------------------------------------- study state


def test_pause_and_resume(client, tokens, worker: Worker) -> None:
    create_study(client, tokens)
    running = worker.trial()
    set_state(client, tokens, "s1", "pause")
    answer = worker.lease()
    assert answer["trial"] is None and "paused" in answer["reason"]
    assert answer["retry_after_s"] > 0
    # Running trials continue while paused.
    assert worker.ok(running["lease_id"], "heartbeat")["action"] == "continue"
    set_state(client, tokens, "s1", "resume")
    assert worker.lease()["trial"] is not None


def test_stop(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    set_state(client, tokens, "s1", "stop")
    hb = worker.ok(trial["lease_id"], "heartbeat")
    assert hb["action"] == "stop" and "stopped" in hb["message"]
    assert worker.ok(trial["lease_id"], "report", {"step": 0, "value": 0.1})["action"] == "stop"
    answer = worker.lease()
    assert answer["trial"] is None and "stopped" in answer["reason"]
    # The worker drops the trial; when its lease expires the trial is failed, not re-run.
    expire_and_reap(ctx, trial["lease_id"])
    frozen = optuna_trial(ctx, trial["trial_id"])
    assert frozen.state == TS.FAIL and "study stopped" in frozen.user_attrs["fail_reason"]


def test_studies_filter_and_unknown_names(client, tokens, worker: Worker) -> None:
    create_study(client, tokens, name="a")
    create_study(client, tokens, name="b")
    assert worker.trial(studies=["b"])["study_name"] == "b"
    answer = worker.lease(studies=["zzz"])
    assert answer["trial"] is None and "no study named 'zzz'" in answer["reason"]


def test_several_studies_share_workers(client, tokens, worker: Worker) -> None:
    for name in ("a", "b", "c"):
        create_study(client, tokens, name=name)
    names = [worker.trial()["study_name"] for _ in range(6)]
    assert sorted(names) == ["a", "a", "b", "b", "c", "c"]


# --------------------------------------------------------------------------- budget


def test_budget_max_trials(client, tokens, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 2})
    for _ in range(2):
        trial = worker.trial()
        worker.ok(trial["lease_id"], "complete", {"value": 0.5})
    answer = worker.lease()
    assert answer["trial"] is None and "budget used (2/2 trials)" in answer["reason"]


def test_budget_max_concurrent(client, tokens, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 10, "max_concurrent": 2})
    one, _two = worker.trial(), worker.trial()
    answer = worker.lease()
    assert answer["trial"] is None and "max_concurrent 2" in answer["reason"]
    assert answer["retry_after_s"] <= 1.0
    worker.ok(one["lease_id"], "complete", {"value": 0.5})
    assert worker.lease()["trial"] is not None


def test_conditional_params_in_leases(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 30})
    seen = set()
    for _ in range(30):
        params = worker.trial()["params"]
        seen.add(params["optimizer"])
        assert ("momentum" in params) == (params["optimizer"] in ("momentum", "nesterov"))
    assert {"sgd", "momentum"} <= seen


def test_setting_rename_and_seed(client, tokens, worker: Worker) -> None:
    space = {"learning_rate": {"type": "float", "low": 0.01, "high": 0.1, "setting": "lr"}}
    create_study(client, tokens, space=space, sampler={"name": "random", "seed": 3})
    a, b = worker.trial(), worker.trial()
    assert set(a["params"]) == {"learning_rate"}  # Optuna's name, as study.optimize records it
    assert a["settings"]["lr"] == a["params"]["learning_rate"]  # the trainer's name
    assert a["settings"]["epochs"] == 3  # fixed settings are part of the settings
    assert a["seed"] != b["seed"]


# --------------------------------------------------------------------------- long poll


def test_long_poll_waits_then_answers(client, tokens, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 1})
    trial = worker.trial()
    start = time.monotonic()
    answer = worker.lease(wait_s=0.6)
    assert answer["trial"] is None and time.monotonic() - start >= 0.5
    timer = threading.Timer(
        0.3, worker.ok, (trial["lease_id"], "fail", {"reason": "r", "retry": True})
    )
    timer.start()
    start = time.monotonic()
    answer = worker.lease(wait_s=5)
    timer.join()
    assert answer["trial"]["trial_id"] == trial["trial_id"]
    assert time.monotonic() - start < 4


# --------------------------------------------------------------------------- errors


def test_unknown_lease_is_404(client, tokens, worker: Worker) -> None:
    bodies = {
        "heartbeat": {},
        "report": {"step": 0, "value": 1.0},
        "complete": {"value": 1.0},
        "fail": {"reason": "x"},
    }
    for verb, body in bodies.items():
        response = worker.post("no-such-lease", verb, body)
        assert response.status_code == 404, verb
        assert response.json() == {
            "detail": "lease 'no-such-lease' not found",
            "field": "lease_id",
        }


def test_unregistered_worker_is_404(client, tokens) -> None:
    create_study(client, tokens)
    response = client.post(
        f"{API}/trials/lease", json={"worker_id": "ghost"}, headers=Tokens.header(tokens.worker)
    )
    assert response.status_code == 404
    assert response.json()["field"] == "worker_id" and "ghost" in response.json()["detail"]


def test_report_nan_is_422_naming_value(client, tokens, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    response = client.post(
        f"{API}/leases/{trial['lease_id']}/report",
        content=b'{"step": 0, "value": NaN}',
        headers={**worker.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("value:")


def test_no_work_answers(client, tokens, worker: Worker) -> None:
    answer = worker.lease()
    assert answer == {
        "trial": None,
        "trials": [],
        "retry_after_s": 5.0,
        "reason": "no study",
        "reasons": [{"code": "no_study", "message": "no study", "study": None}],
    }


def test_multi_objective_complete_needs_every_objective(client, tokens, ctx, worker) -> None:
    create_study(
        client,
        tokens,
        direction=None,
        objective=None,
        directions=["maximize", "minimize"],
        objectives=["val_accuracy", "seconds"],
    )
    trial = worker.trial()
    assert trial["objective"] == "val_accuracy"
    worker.ok(trial["lease_id"], "report", {"step": 0, "value": 0.5})
    missing = worker.post(trial["lease_id"], "complete", {"value": 0.9})
    assert missing.status_code == 422 and missing.json()["field"] == "metrics.seconds"
    worker.ok(trial["lease_id"], "complete", {"value": 0.9, "metrics": {"seconds": 12}})
    assert optuna_trial(ctx, trial["trial_id"]).values == [0.9, 12.0]


# --------------------------------------------------------------------------- auth


def test_protocol_auth(client, tokens, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    lid = trial["lease_id"]
    calls = [
        ("/trials/lease", {"worker_id": worker.worker_id}),
        (f"/leases/{lid}/heartbeat", {}),
        (f"/leases/{lid}/report", {"step": 0, "value": 1.0}),
        (f"/leases/{lid}/complete", {"value": 1.0}),
        (f"/leases/{lid}/fail", {"reason": "x"}),
        ("/workers/register", {"hostname": "h"}),
    ]
    for path, body in calls:
        assert client.post(API + path, json=body).status_code == 401, path
        viewer = client.post(API + path, json=body, headers=Tokens.header(tokens.viewer))
        assert viewer.status_code == 403, path
    admin = Worker(client, tokens.admin)
    assert admin.lease()["trial"] is not None  # admins may speak the protocol too
    assert client.get(f"{API}/workers").status_code == 401
    with client:  # nothing above changed the trial
        assert worker.ok(lid, "heartbeat")["action"] == "continue"
