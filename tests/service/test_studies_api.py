"""The /studies API on SQLite and PostgreSQL: lifecycle, trials, export, roles, Optuna interop.

Trials are seeded with Optuna itself (ask/tell on the service's storage), the
way any Optuna client would; lease bookkeeping rows (queued/leased trials,
per-step metrics, lease history) are inserted directly into the hpo_ tables.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from datetime import timedelta
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event, func, select

from hpo.spec import StudySpec
from service.core.db import utcnow
from service.storage.models import LeaseRecord, StudyRecord, TrialMetric, TrialRecord
from service.storage.samplers import suggest_params
from service.studies.records import create_study
from tests.conftest import Tokens
from tests.support import study_spec

API = "/api/v1/studies"


def create(client, name: str = "mnist-lr", **extra: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.post(API, json=study_spec(name, **extra))
    assert response.status_code == 201, response.text
    return response.json()


def run_trials(  # type: ignore[no-untyped-def]
    ctx, name: str, outcomes: list[Any], attrs: dict[int, dict[str, Any]] | None = None
) -> list[int]:
    """Run trials with Optuna ask/tell: a float completes, 'pruned'/'fail'/'running' as named.

    Every trial reports two intermediate values first; ``attrs`` maps the index of
    an outcome to user attributes set before it finishes. Returns the trial numbers.
    """
    with ctx.db.session() as session:
        record = session.scalar(select(StudyRecord).where(StudyRecord.name == name))
        spec = StudySpec.model_validate(record.spec)
    study = optuna.load_study(study_name=name, storage=ctx.store.storage)
    numbers = []
    for outcome in outcomes:
        trial = study.ask()
        suggest_params(trial, spec)
        trial.report(0.25, 0)
        trial.report(0.5, 1)
        for key, value in (attrs or {}).get(len(numbers), {}).items():
            trial.set_user_attr(key, value)
        if isinstance(outcome, float | int):
            study.tell(trial, float(outcome))
        elif outcome == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif outcome == "fail":
            study.tell(trial, state=TrialState.FAIL)
        numbers.append(trial.number)
    return numbers


def trial_id_of(ctx, name: str, number: int) -> int:  # type: ignore[no-untyped-def]
    study_id = ctx.store.storage.get_study_id_from_name(name)
    return ctx.store.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def add_trial_row(ctx, name: str, number: int, state: str, **fields: Any) -> int:  # type: ignore[no-untyped-def]
    """Insert the service's bookkeeping row for an Optuna trial; returns its id."""
    now = utcnow()
    with ctx.db.session() as session:
        study_id = session.scalar(select(StudyRecord.study_id).where(StudyRecord.name == name))
        row = TrialRecord(
            study_id=study_id,
            optuna_trial_id=trial_id_of(ctx, name, number),
            number=number,
            state=state,
            attempts=fields.pop("attempts", 1),
            created_at=now,
            updated_at=now,
            **fields,
        )
        session.add(row)
        session.flush()
        return row.id


def add_lease(ctx, row_id: int, attempt: int, state: str, worker: str = "w1") -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with ctx.db.session() as session:
        session.add(
            LeaseRecord(
                lease_id=str(uuid.uuid4()),
                trial_row_id=row_id,
                worker_id=worker,
                attempt=attempt,
                state=state,
                created_at=now - timedelta(seconds=60 - attempt),
                expires_at=now + timedelta(seconds=30),
                ended_at=None if state == "active" else now,
            )
        )


# --------------------------------------------------------------------------- create, get


def test_create_then_get_summary_counts_and_best_trial(admin, ctx) -> None:
    created = create(admin)
    assert created["state"] == "running"
    assert created["counts"]["total"] == 0 and created["best_trial"] is None
    assert created["seed"] == 7 and created["sampler"] == "random"
    # Plain Optuna users see the spec and the service version in the study's user attrs.
    attrs = optuna.load_study(study_name="mnist-lr", storage=ctx.store.storage).user_attrs
    assert attrs["hpo_spec"]["space"]["lr"]["log"] is True
    assert attrs["hpo_version"] and attrs["hpo_seed"] == 7

    run_trials(ctx, "mnist-lr", [0.91, 0.97, 0.95, "pruned", "fail", "running", "running"])
    add_trial_row(ctx, "mnist-lr", 5, "queued", attempts=1)
    row = add_trial_row(
        ctx, "mnist-lr", 6, "leased", worker_id="w1", lease_expires_at=utcnow() + timedelta(60)
    )
    add_lease(ctx, row, 1, "active")

    for ref in ("mnist-lr", str(created["study_id"])):
        summary = admin.get(f"{API}/{ref}").json()
        assert summary["counts"] == {
            "complete": 3,
            "pruned": 1,
            "fail": 1,
            "running": 1,
            "waiting": 0,
            "queued": 1,
            "paused": 0,
            "leased": 1,
            "total": 7,
        }
        best = summary["best_trial"]
        assert best["number"] == 1 and best["value"] == pytest.approx(0.97)
        assert set(best["params"]) >= {"optimizer", "lr"}
        assert summary["best_trials"] is None


def test_minimize_best_trial_and_random_seed(admin, ctx) -> None:
    body = study_spec("minimize", direction="minimize", sampler={"name": "tpe"})
    created = admin.post(API, json=body).json()
    assert 0 <= created["seed"] < 2**31
    run_trials(ctx, "minimize", [0.3, 0.1, 0.2])
    assert admin.get(f"{API}/minimize").json()["best_trial"]["value"] == pytest.approx(0.1)


def test_multi_objective_returns_the_pareto_front(admin, ctx) -> None:
    body = study_spec(
        "pareto",
        directions=["maximize", "minimize"],
        objectives=["val_accuracy", "seconds"],
    )
    assert admin.post(API, json=body).status_code == 201
    study = optuna.load_study(study_name="pareto", storage=ctx.store.storage)
    points = [(0.90, 10.0), (0.95, 20.0), (0.85, 30.0), (0.97, 40.0), (0.90, 15.0)]
    for acc, seconds in points:
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        study.tell(trial, [acc, seconds])
    summary = admin.get(f"{API}/pareto").json()
    assert summary["best_trial"] is None
    front = {t["number"]: t["values"] for t in summary["best_trials"]}
    assert front == {0: [0.90, 10.0], 1: [0.95, 20.0], 3: [0.97, 40.0]}
    assert {t.number for t in study.best_trials} == set(front)
    page = admin.get(f"{API}/pareto/trials").json()
    assert page["items"][0]["values"] == [0.90, 10.0] and page["items"][0]["value"] is None


def test_duplicate_name_is_409_also_for_a_plain_optuna_study(admin, ctx) -> None:
    create(admin, "dup")
    again = admin.post(API, json=study_spec("dup"))
    assert again.status_code == 409
    assert again.json() == {"detail": "a study named 'dup' already exists", "field": "name"}
    optuna.create_study(study_name="made-by-optuna", storage=ctx.store.storage)
    clash = admin.post(API, json=study_spec("made-by-optuna"))
    assert clash.status_code == 409
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(StudyRecord)) == 1


def test_no_half_created_study_when_our_insert_fails(ctx, monkeypatch) -> None:
    import service.studies.records as studies

    def broken(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(studies, "_insert_record", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        create_study(ctx, StudySpec.model_validate(study_spec("half")))
    assert "half" not in optuna.get_all_study_names(ctx.store.storage)


# --------------------------------------------------------------------------- list, 404, 422


def test_list_is_paginated_in_creation_order(admin) -> None:
    for i in range(5):
        create(admin, f"study-{i}")
    first = admin.get(API, params={"limit": 2}).json()
    assert first["total"] == 5 and first["limit"] == 2 and first["offset"] == 0
    assert [s["name"] for s in first["items"]] == ["study-0", "study-1"]
    last = admin.get(API, params={"limit": 2, "offset": 4}).json()
    assert [s["name"] for s in last["items"]] == ["study-4"]
    assert admin.get(API, params={"offset": 10}).json()["items"] == []
    assert admin.get(API).json()["limit"] == 50


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
    ],
)
def test_bad_pagination_is_422_naming_the_field(admin, params: dict[str, Any], field: str) -> None:
    create(admin, "paged")
    for url in (API, f"{API}/paged/trials"):
        response = admin.get(url, params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["msg"].startswith(f"{field}:")


def test_unknown_study_and_trial_are_404(admin, ctx) -> None:
    create(admin, "known")
    run_trials(ctx, "known", [0.5])
    for url in (
        f"{API}/nope",
        f"{API}/999",
        f"{API}/99999999999999999999",
        f"{API}/nope/trials",
        f"{API}/nope/trials/0",
        f"{API}/nope/export",
        f"{API}/known/trials/7",
    ):
        response = admin.get(url)
        assert response.status_code == 404, url
    assert admin.get(f"{API}/known/trials/7").json()["detail"] == (
        "trial 7 of study 'known' not found"
    )
    for action in ("pause", "resume", "stop"):
        assert admin.post(f"{API}/nope/{action}").status_code == 404
    assert admin.delete(f"{API}/nope").status_code == 404


# --------------------------------------------------------------------------- state machine


def test_pause_resume_stop_state_machine(admin, ctx) -> None:
    create(admin, "machine")

    def act(action: str) -> Any:
        return admin.post(f"{API}/machine/{action}")

    assert act("pause").json()["state"] == "paused"
    assert act("pause").json()["state"] == "paused"  # repeating is a no-op
    assert act("resume").json()["state"] == "running"
    assert act("resume").json()["state"] == "running"
    assert act("pause").json()["state"] == "paused"
    assert act("stop").json()["state"] == "stopped"
    for action in ("resume", "pause"):
        refused = act(action)
        assert refused.status_code == 409
        assert "stopped" in refused.json()["detail"] and "final" in refused.json()["detail"]
    assert act("stop").status_code == 200
    with ctx.db.session() as session:
        record = session.scalar(select(StudyRecord).where(StudyRecord.name == "machine"))
        assert record.state == "stopped"
        assert record.updated_at >= record.created_at


# --------------------------------------------------------------------------- delete


def test_delete_refuses_active_leases_unless_forced(admin, ctx) -> None:
    create(admin, "doomed")
    run_trials(ctx, "doomed", [0.5, "running"])
    row = add_trial_row(
        ctx, "doomed", 1, "leased", worker_id="w1", lease_expires_at=utcnow() + timedelta(60)
    )
    add_lease(ctx, row, 1, "active")
    with ctx.db.session() as session:
        study_id = session.scalar(select(StudyRecord.study_id).where(StudyRecord.name == "doomed"))
        session.add(
            TrialMetric(
                study_id=study_id,
                optuna_trial_id=trial_id_of(ctx, "doomed", 1),
                attempt=1,
                step=0,
                value=0.3,
                metrics={"loss": 1.0},
                created_at=utcnow(),
            )
        )
    refused = admin.delete(f"{API}/doomed")
    assert refused.status_code == 409
    assert "1 active lease" in refused.json()["detail"]
    assert admin.get(f"{API}/doomed").status_code == 200

    assert admin.delete(f"{API}/doomed", params={"force": "true"}).status_code == 204
    assert admin.get(f"{API}/doomed").status_code == 404
    assert "doomed" not in optuna.get_all_study_names(ctx.store.storage)
    with ctx.db.session() as session:
        for model in (StudyRecord, TrialRecord, LeaseRecord, TrialMetric):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    assert admin.delete(f"{API}/doomed").status_code == 404


def test_delete_without_leases_and_expired_leases_do_not_block(admin, ctx) -> None:
    created = create(admin, "old")
    run_trials(ctx, "old", ["running"])
    add_trial_row(
        ctx, "old", 0, "leased", worker_id="w", lease_expires_at=utcnow() - timedelta(seconds=5)
    )
    assert admin.delete(f"{API}/{created['study_id']}").status_code == 204
    assert admin.get(API).json()["total"] == 0
    # The name is free again.
    create(admin, "old")


# --------------------------------------------------------------------------- trials


def test_trials_filter_paginate_and_sort(admin, ctx) -> None:
    create(admin, "trials")
    run_trials(ctx, "trials", [0.6, 0.9, "pruned", 0.7, "fail", "running", "running"])
    add_trial_row(ctx, "trials", 6, "queued", attempts=2)

    def page(**params: Any) -> dict[str, Any]:
        response = admin.get(f"{API}/trials/trials", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    everything = page()
    assert everything["total"] == 7
    assert [t["number"] for t in everything["items"]] == list(range(7))
    expected = {"complete": [0, 1, 3], "pruned": [2], "fail": [4], "running": [5], "queued": [6]}
    for state, numbers in expected.items():
        got = page(state=state)
        assert [t["number"] for t in got["items"]] == numbers, state
        assert got["total"] == len(numbers)
        assert all(t["state"] == state for t in got["items"])
    assert page(state="queued")["items"][0]["attempts"] == 2
    assert page(state="complete")["items"][0]["attempts"] == 1  # made outside the service

    second = page(limit=2, offset=2)
    assert [t["number"] for t in second["items"]] == [2, 3] and second["total"] == 7
    # Pruned trials carry their last intermediate value; running ones have none (last).
    by_value = [t["number"] for t in page(order="-value")["items"]]
    assert by_value[:4] == [1, 3, 0, 2] and set(by_value[4:]) == {4, 5, 6}
    assert [t["number"] for t in page(order="value")["items"]][:4] == [2, 0, 3, 1]
    assert [t["number"] for t in page(order="-number", limit=3)["items"]] == [6, 5, 4]

    item = page(state="complete")["items"][1]
    assert item["value"] == pytest.approx(0.9) and item["values"] == [pytest.approx(0.9)]
    assert item["duration_s"] >= 0 and item["datetime_complete"] >= item["datetime_start"]
    assert item["params"]["optimizer"] in ("sgd", "momentum", "adam")
    assert ("momentum" in item["params"]) == (item["params"]["optimizer"] == "momentum")
    assert admin.get(f"{API}/trials/trials", params={"state": "lost"}).status_code == 422
    assert admin.get(f"{API}/trials/trials", params={"order": "loss"}).status_code == 422


def test_trial_detail_with_curve_metrics_attrs_and_lease_history(admin, ctx) -> None:
    create(admin, "detail")
    run_trials(ctx, "detail", [0.8, "fail"], attrs={0: {"test_accuracy": 0.95}})
    row = add_trial_row(
        ctx,
        "detail",
        1,
        "finished",
        attempts=2,
        worker_id="gpu-box:1",
        final_state="fail",
        fail_reason="CUDA out of memory",
        diagnosis="oom",
    )
    add_lease(ctx, row, 1, "expired", worker="gpu-box:0")
    add_lease(ctx, row, 2, "failed", worker="gpu-box:1")
    with ctx.db.session() as session:
        study_id = session.scalar(select(StudyRecord.study_id).where(StudyRecord.name == "detail"))
        for step in (1, 0):
            session.add(
                TrialMetric(
                    study_id=study_id,
                    optuna_trial_id=trial_id_of(ctx, "detail", 1),
                    attempt=2,
                    step=step,
                    value=0.1 * step,
                    metrics={"train_loss": 2.0 - step, "lr": 0.01},
                    created_at=utcnow(),
                )
            )

    first = admin.get(f"{API}/detail/trials/0").json()
    assert first["intermediate_values"] == [{"step": 0, "value": 0.25}, {"step": 1, "value": 0.5}]
    assert first["user_attrs"] == {"test_accuracy": 0.95}
    assert first["leases"] == [] and first["metrics"] == [] and first["attempts"] == 1

    failed = admin.get(f"{API}/detail/trials/1").json()
    assert failed["state"] == "fail"
    assert failed["fail_reason"] == "CUDA out of memory" and failed["diagnosis"] == "oom"
    assert failed["attempts"] == 2 and failed["worker_id"] == "gpu-box:1"
    assert [m["step"] for m in failed["metrics"]] == [0, 1]
    assert failed["metrics"][1]["metrics"] == {"train_loss": 1.0, "lr": 0.01}
    assert [
        (lease["attempt"], lease["worker_id"], lease["state"]) for lease in failed["leases"]
    ] == [
        (1, "gpu-box:0", "expired"),
        (2, "gpu-box:1", "failed"),
    ]


def test_fail_reason_from_optuna_user_attr_for_trials_run_outside(admin, ctx) -> None:
    create(admin, "outside")
    run_trials(ctx, "outside", ["fail"], attrs={0: {"fail_reason": "nan loss"}})
    item = admin.get(f"{API}/outside/trials").json()["items"][0]
    assert item["fail_reason"] == "nan loss" and item["attempts"] == 1


def test_summary_and_trial_pages_cost_the_same_queries_at_any_size(admin, ctx) -> None:
    create(admin, "fast")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def measure() -> int:
        statements.clear()
        event.listen(ctx.db.engine, "before_cursor_execute", count)
        try:
            assert admin.get(f"{API}/fast").status_code == 200
            assert admin.get(f"{API}/fast/trials", params={"limit": 500}).status_code == 200
        finally:
            event.remove(ctx.db.engine, "before_cursor_execute", count)
        return len(statements)

    run_trials(ctx, "fast", [0.1, 0.2, 0.3])
    small = measure()
    run_trials(ctx, "fast", [0.05 * i for i in range(20)])
    assert measure() == small


# --------------------------------------------------------------------------- export


def test_export_csv_and_json(admin, ctx) -> None:
    body = study_spec("export me")
    body["workload"] = "formula-injection"  # choices that are not optimizer names
    body["space"]["optimizer"]["choices"] = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1", "-2"]
    body["space"]["momentum"]["when"] = {"optimizer": ["-2"]}
    assert admin.post(API, json=body).status_code == 201
    run_trials(ctx, "export me", [0.9, -0.25, "pruned", "fail"], {0: {"test_accuracy": 0.93}})
    add_trial_row(
        ctx, "export me", 3, "finished", final_state="fail", fail_reason="=HYPERLINK(evil)"
    )

    response = admin.get(f"{API}/export me/export", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and 'filename="export_me.csv"' in disposition
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0])[:4] == ["number", "trial_id", "state", "value"]
    assert {"params_optimizer", "params_lr", "params_momentum", "test_accuracy"} <= set(rows[0])
    assert {"attempts", "duration_s", "fail_reason", "diagnosis"} <= set(rows[0])
    assert rows[0]["test_accuracy"] == "0.93" and rows[1]["test_accuracy"] == ""
    assert rows[1]["value"] == "-0.25"  # numbers stay numbers
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned", "fail"]
    for r in rows:  # every text cell that could start a formula is defused
        assert r["params_optimizer"].startswith("'")
        assert float(r["params_lr"]) > 0
    assert rows[3]["fail_reason"] == "'=HYPERLINK(evil)"

    exported = admin.get(f"{API}/export me/export", params={"format": "json"})
    assert exported.headers["content-type"].startswith("application/json")
    assert 'filename="export_me.json"' in exported.headers["content-disposition"]
    data = exported.json()
    assert data["study"] == "export me" and len(data["trials"]) == 4
    assert data["columns"] == list(rows[0])
    first = data["trials"][0]
    assert first["value"] == pytest.approx(0.9) and first["test_accuracy"] == 0.93
    assert first["params_optimizer"] in body["space"]["optimizer"]["choices"]  # not defused
    assert data["trials"][3]["fail_reason"] == "=HYPERLINK(evil)"
    assert admin.get(f"{API}/export me/export", params={"format": "xml"}).status_code == 422


def test_export_of_an_empty_study_has_the_header_only(admin) -> None:
    create(admin, "empty")
    lines = admin.get(f"{API}/empty/export").text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("number,trial_id,state,value,params_optimizer")
    assert admin.get(f"{API}/empty/export?format=json").json()["trials"] == []


def test_export_streams_many_trials_in_batches(admin, ctx, monkeypatch) -> None:
    import service.studies.export as export

    monkeypatch.setattr(export, "BATCH", 4)
    create(admin, "batched")
    run_trials(ctx, "batched", [i / 10 for i in range(10)])
    rows = list(csv.DictReader(io.StringIO(admin.get(f"{API}/batched/export").text)))
    assert [int(r["number"]) for r in rows] == list(range(10))
    assert len(admin.get(f"{API}/batched/export?format=json").json()["trials"]) == 10


# --------------------------------------------------------------------------- roles


def test_viewer_reads_and_only_admin_changes(client, tokens: Tokens, ctx) -> None:
    admin_h, viewer_h, worker_h = (
        Tokens.header(t) for t in (tokens.admin, tokens.viewer, tokens.worker)
    )
    assert client.post(API, json=study_spec("roles"), headers=admin_h).status_code == 201
    run_trials(ctx, "roles", [0.5])
    reads = [API, f"{API}/roles", f"{API}/roles/trials", f"{API}/roles/trials/0"]
    reads.append(f"{API}/roles/export")
    for url in reads:
        for headers in (viewer_h, worker_h):
            assert client.get(url, headers=headers).status_code == 200, url
        assert client.get(url).status_code == 401, url
    writes = [
        ("POST", API, study_spec("other")),
        ("POST", f"{API}/roles/pause", None),
        ("POST", f"{API}/roles/resume", None),
        ("POST", f"{API}/roles/stop", None),
        ("DELETE", f"{API}/roles", None),
    ]
    for method, url, body in writes:
        for headers in (viewer_h, worker_h):
            response = client.request(method, url, json=body, headers=headers)
            assert response.status_code == 403, (method, url)
        assert client.request(method, url, json=body).status_code == 401, (method, url)
    assert client.get(f"{API}/roles", headers=viewer_h).json()["state"] == "running"


def test_openapi_documents_the_study_routes(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    create_op = paths[API]["post"]
    assert {"201", "401", "403", "409", "422"} <= set(create_op["responses"])
    assert "404" in paths[f"{API}/{{study}}"]["get"]["responses"]
    assert "409" in paths[f"{API}/{{study}}/resume"]["post"]["responses"]
    assert {"get", "delete"} <= set(paths[f"{API}/{{study}}"])
    assert f"{API}/{{study}}/export" in paths and f"{API}/{{study}}/trials/{{number}}" in paths


# --------------------------------------------------------------------------- Optuna interop


def test_a_fresh_optuna_client_loads_a_study_created_through_the_api(admin, ctx, db_url) -> None:
    created = create(admin, "interop")
    run_trials(ctx, "interop", [0.81, 0.93, "pruned", 0.88])

    fresh = optuna.load_study(study_name="interop", storage=db_url)
    assert fresh._study_id == created["study_id"]
    assert fresh.direction == optuna.study.StudyDirection.MAXIMIZE
    assert fresh.user_attrs["hpo_spec"]["name"] == "interop"
    api_trials = admin.get(f"{API}/interop/trials").json()["items"]
    assert len(fresh.trials) == len(api_trials) == 4
    for frozen, item in zip(fresh.trials, api_trials, strict=True):
        assert frozen.number == item["number"] and frozen._trial_id == item["trial_id"]
        assert frozen.state.name.lower() == item["state"]
        assert frozen.params == item["params"]
        assert frozen.value == pytest.approx(item["value"])
        assert frozen.intermediate_values == {0: 0.25, 1: 0.5}
    assert fresh.best_trial.number == admin.get(f"{API}/interop").json()["best_trial"]["number"]
    assert fresh.best_value == pytest.approx(0.93)

    # The fresh client can add trials too; the API sees them at once.
    trial = fresh.ask()
    trial.suggest_float("lr", 1e-4, 1.0, log=True)
    fresh.tell(trial, 0.99)
    summary = admin.get(f"{API}/interop").json()
    assert summary["counts"]["complete"] == 4 and summary["best_trial"]["number"] == 4
    assert math.isclose(summary["best_trial"]["value"], 0.99)


# --------------------------------------------------------------------------- with the protocol


def test_trials_run_through_the_protocol_show_up_everywhere(client, tokens: Tokens, ctx) -> None:
    from tests.service.lease_helpers import Worker

    admin_h = Tokens.header(tokens.admin)
    assert client.post(API, json=study_spec("via-protocol"), headers=admin_h).status_code == 201
    worker = Worker(client, tokens.worker)
    trial = worker.trial()

    summary = client.get(f"{API}/via-protocol", headers=admin_h).json()
    assert summary["counts"]["running"] == 1 and summary["counts"]["leased"] == 1
    listed = client.get(f"{API}/via-protocol/trials", headers=admin_h).json()["items"]
    assert listed[0]["worker_id"] == worker.worker_id and listed[0]["attempts"] == 1
    assert listed[0]["params"] == trial["params"]
    busy = client.delete(f"{API}/via-protocol", headers=admin_h)
    assert busy.status_code == 409

    lease = trial["lease_id"]
    worker.ok(lease, "report", {"step": 0, "value": 0.5, "metrics": {"train_loss": 0.7}})
    worker.ok(lease, "complete", {"value": 0.9, "metrics": {"test_accuracy": 0.88}})

    detail = client.get(f"{API}/via-protocol/trials/0", headers=admin_h).json()
    assert detail["state"] == "complete" and detail["value"] == pytest.approx(0.9)
    assert detail["intermediate_values"] == [{"step": 0, "value": 0.5}]
    assert detail["metrics"][0]["metrics"] == {"train_loss": 0.7}
    assert [(x["attempt"], x["worker_id"]) for x in detail["leases"]] == [(1, worker.worker_id)]
    assert detail["leases"][0]["ended_at"] is not None
    summary = client.get(f"{API}/via-protocol", headers=admin_h).json()
    assert summary["counts"]["complete"] == 1 and summary["counts"]["leased"] == 0
    assert summary["best_trial"]["params"] == trial["params"]

    rows = list(
        csv.DictReader(io.StringIO(client.get(f"{API}/via-protocol/export", headers=admin_h).text))
    )
    assert rows[0]["test_accuracy"] == "0.88" and "final_metrics" not in rows[0]
    assert rows[0]["worker_id"] == worker.worker_id
    assert client.delete(f"{API}/via-protocol", headers=admin_h).status_code == 204


def test_the_studies_list_carries_each_label(admin) -> None:  # type: ignore[no-untyped-def]
    create(admin, "labelled")
    [item] = [s for s in admin.get(API).json()["items"] if s["name"] == "labelled"]
    assert item["status"] == "waiting" and item["waiting_on"] == "no_workers"
    assert admin.post(f"{API}/labelled/stop").status_code == 200
    [item] = [s for s in admin.get(API).json()["items"] if s["name"] == "labelled"]
    assert item["status"] == "stopped" and item["waiting_on"] is None
