"""The trial page's findings, telemetry and compression before/after, the study page's
diagnosis, the workers page's packs, live utilisation and hints (HTTP level).

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import html
import re
from typing import Any

import optuna
import pytest

from bench.synthetic import compression, demo, seeding
from service.dashboard.charts_base import fmt
from service.storage.models import TrialRecord
from tests.dashboard.conftest import api

HOSTILE = "<img src=x onerror=alert(1)>"


def _trial_page(viewer: Any, study: int, number: int) -> str:
    response = viewer.get(f"/dashboard/studies/{study}/trials/{number}")
    assert response.status_code == 200
    return response.text


def _first(viewer: Any, study: int, state: str) -> dict[str, Any]:
    return api(viewer, f"/studies/{study}/trials?state={state}&limit=1")["items"][0]


# --------------------------------------------------------------------------- trial page


def test_trial_page_shows_findings_with_evidence_and_telemetry(viewer, study_id) -> None:
    number = _first(viewer, study_id, "fail")["number"]
    detail = api(viewer, f"/studies/{study_id}/trials/{number}")
    [found] = detail["findings"]
    text = _trial_page(viewer, study_id, number)
    section = text[text.index('id="findings"') : text.index('id="telemetry"')]
    assert "badge sev-error" in section and ">diverged<" in section
    assert "from epoch 2" in section and html.escape(found["message"]) in section
    assert f"<dt>lr</dt><dd>{fmt(found['evidence']['lr'])}</dd>" in section
    telemetry = text[text.index('id="telemetry"') :]
    mean = detail["telemetry"]["util_mean_pct"]
    assert f"<dt>device utilisation, mean</dt><dd>{mean:.1f} %</dd>" in telemetry
    assert "waiting on data" in telemetry and "samples/s" in telemetry
    chart = viewer.get(f"/api/v1/dashboard/studies/{study_id}/trials/{number}/chart").json()
    shapes = chart["figure"]["layout"]["shapes"]
    assert {s["x0"] for s in shapes} == {2} and len(shapes) == 2  # both panels
    assert {a["text"] for a in chart["figure"]["layout"]["annotations"]} >= {"diverged"}


def test_a_healthy_trial_has_no_finding(viewer, study_id) -> None:
    number = _first(viewer, study_id, "complete")["number"]
    text = _trial_page(viewer, study_id, number)
    assert 'id="no-findings"' in text and "badge sev-" not in text
    assert 'id="compression"' not in text  # the demo study compresses nothing
    chart = viewer.get(f"/api/v1/dashboard/studies/{study_id}/trials/{number}/chart").json()
    assert not chart["figure"]["layout"].get("shapes")


def test_findings_are_escaped(viewer, ctx, study_id) -> None:
    number = _first(viewer, study_id, "fail")["number"]
    with ctx.db.session() as session:
        row = session.query(TrialRecord).filter_by(study_id=study_id, number=number).one()
        row.findings = [
            {
                "kind": HOSTILE,
                "epoch": 1,
                "severity": HOSTILE,
                "message": HOSTILE,
                "evidence": {HOSTILE: HOSTILE},
            }
        ]
    text = _trial_page(viewer, study_id, number)
    assert "<img src=x" not in text and html.escape(HOSTILE) in text
    assert "badge sev-info" in text  # an unknown severity is shown as info
    chart = viewer.get(f"/api/v1/dashboard/studies/{study_id}/trials/{number}/chart").text
    assert "<img" not in chart and "&lt;img src=x onerror=alert(1)&gt;" in chart


def test_trial_page_shows_the_compression_and_the_model_before_and_after(
    viewer, compression_id
) -> None:
    item = next(
        t
        for t in api(viewer, f"/studies/{compression_id}/trials?state=complete")["items"]
        if t["params"]["prune_amount"] > 0 and t["params"]["quantize"] == "int8"
    )
    final = api(viewer, f"/studies/{compression_id}/trials/{item['number']}")["user_attrs"][
        "final_metrics"
    ]
    text = _trial_page(viewer, compression_id, item["number"])
    bytes_shown = fmt(float(final["model_bytes"]))
    assert f"<dt>model_bytes</dt><dd>{bytes_shown}</dd>" in text  # both objectives
    section = text[text.index('id="compression"') : text.index("trial-grid")]
    assert '<span class="badge method">prune' in section and "int8</span>" in section
    assert f"<dt>prune_amount</dt><dd>{fmt(item['params']['prune_amount'])}</dd>" in section
    assert "<dt>quantize</dt><dd>int8</dd>" in section
    rows = _table(section[section.index('id="before-after"') :])
    for label, key in (
        ("model bytes", "model_bytes"),
        ("FLOPs", "flops"),
        ("non-zero parameters", "nonzero_params"),
    ):
        before, after = final[f"dense_{key}"], final[key]
        ratio = before / after
        assert rows[label] == [f"{before:,.0f}", f"{after:,.0f}", f"{ratio:.1f}x smaller"]
    before, after = final["dense_val_accuracy"], final["val_accuracy"]
    points = f"{100 * (after - before):+.2f} points"
    assert rows["validation accuracy"] == [f"{before:.4f}", f"{after:.4f}", points]
    assert rows["latency, batch 1024 (ms)"][2].endswith("x faster")


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the first table in ``text``: row header -> its cells' text."""
    body = text[: text.index("</table>")]
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', body, flags=re.S)
    return {label: re.findall(r"<td[^>]*>(.*?)</td>", cells) for label, cells in rows}


# --------------------------------------------------------------------------- diagnosis


def _diagnosis(viewer: Any, study: int) -> dict[str, Any]:
    response = viewer.get(f"/api/v1/dashboard/studies/{study}/diagnosis")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_diagnosis_is_the_apis_with_its_proposals(viewer, ctx, workers) -> None:
    spec = demo.demo_spec("bad-region", ["sgd", "adam"])
    sid = seeding.seed_bulk(ctx, spec, 200, seed=1, workers=workers)
    shown = _diagnosis(viewer, sid)
    answer = api(viewer, f"/studies/{sid}/diagnosis")
    assert {k: shown[k] for k in answer} == answer and shown["external"] is False
    assert shown["findings"]["diverged"] >= 10
    [proposal] = shown["proposals"]
    assert "narrow lr_adaptive to high: 0.02" in proposal["message"]
    assert proposal["edit"] == {
        "op": "replace",
        "path": "space.lr_adaptive.high",
        "old": 0.1,
        "new": 0.02,
    }


def test_the_diagnosis_is_cached_until_a_trial_finishes(viewer, app, ctx, study_id) -> None:
    answers = app.state.dashboard.answers
    first = _diagnosis(viewer, study_id)
    misses = answers.misses
    assert _diagnosis(viewer, study_id) == first and answers.misses == misses
    with ctx.db.session() as session:  # the service's trial rows change (as when one ends)
        row = session.query(TrialRecord).filter_by(study_id=study_id, number=0).one()
        row.findings = [
            {
                "kind": "plateau",
                "epoch": 3,
                "severity": "warning",
                "message": "no progress",
                "evidence": {},
            }
        ]
        row.updated_at = row.updated_at.replace(year=2030)
    later = _diagnosis(viewer, study_id)
    assert later["version"] != first["version"] and later["findings"]["plateau"] == 1


def test_a_big_studys_diagnosis_is_built_in_the_background_and_spaced(
    viewer, app, ctx, study_id, monkeypatch
) -> None:
    from service.dashboard import state

    monkeypatch.setattr(state, "STALE_OK_TRIALS", 10)
    pending = _diagnosis(viewer, study_id)
    assert pending["pending"] is True and pending["trials"] == 90 and pending["proposals"] == []
    assert app.state.dashboard.answers.idle(timeout_s=60)
    ready = _diagnosis(viewer, study_id)
    assert ready["pending"] is False and ready["findings"]["diverged"] >= 1
    with ctx.db.session() as session:  # a trial row changes right after the build:
        row = session.query(TrialRecord).filter_by(study_id=study_id, number=0).one()
        row.updated_at = row.updated_at.replace(year=2030)
    monkeypatch.setattr(state, "DIAGNOSIS_SPACING", 1e9)
    assert _diagnosis(viewer, study_id)["version"] == ready["version"]  # not rebuilt yet
    monkeypatch.setattr(state, "DIAGNOSIS_SPACING", 0.0)
    _diagnosis(viewer, study_id)  # the previous answer, and a rebuild in the background
    assert app.state.dashboard.answers.idle(timeout_s=60)
    assert _diagnosis(viewer, study_id)["version"] != ready["version"]


def test_a_healthy_study_and_an_outside_study(viewer, ctx, compression_id) -> None:
    healthy = _diagnosis(viewer, compression_id)
    assert healthy["trials"] == 150 and healthy["findings"] == {} and healthy["proposals"] == []
    study = optuna.create_study(study_name="outside", storage=ctx.store.storage)
    outside = study._study_id
    assert _diagnosis(viewer, outside)["external"] is True
    assert viewer.get("/api/v1/dashboard/studies/999/diagnosis").status_code == 404


# --------------------------------------------------------------------------- workers


@pytest.fixture
def fleet(ctx, workers) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A compression study with 5 running trials: 3 in one worker's pack, 1 on a busy GPU,
    1 on a CPU worker; one GPU worker idle with low utilisation."""
    spec = compression.compression_spec("packed")
    sid = seeding.seed_ask_tell(ctx, spec, 12, seed=1, running=5, simulate=compression.simulate)
    busy, packed, idle, _ = workers
    cpu = seeding.register_cpu_worker(ctx)
    pack = seeding.hold_leases(ctx, sid, packed, [7, 8, 9])
    seeding.hold_leases(ctx, sid, busy, [10])
    seeding.hold_leases(ctx, sid, cpu, [11])
    gpu = {"device_memory_mb": 3_000.0, "cpu_pct": 10.0, "host_memory_mb": 900.0}
    seeding.set_telemetry(ctx, busy, {"util_pct": 96.0, **gpu})
    seeding.set_telemetry(ctx, packed, {"util_pct": 20.4, **gpu})
    seeding.set_telemetry(ctx, idle, {"util_pct": 3.0, **gpu})
    seeding.set_telemetry(ctx, cpu, {"util_pct": 15.0, "cpu_pct": 15.0, "host_memory_mb": 800.0})
    return {"study": sid, "pack": pack, "busy": busy, "packed": packed, "idle": idle, "cpu": cpu}


def _workers(viewer: Any) -> dict[str, dict[str, Any]]:
    return {w["worker_id"]: w for w in viewer.get("/api/v1/dashboard/workers").json()}


def test_workers_show_their_pack_and_live_telemetry(viewer, fleet) -> None:
    shown = _workers(viewer)
    packed = shown[fleet["packed"]]
    assert packed["pack"]["size"] == 3
    assert [t["number"] for t in packed["pack"]["trials"]] == fleet["pack"] == [7, 8, 9]
    assert {t["study"] for t in packed["pack"]["trials"]} == {"packed"}
    assert packed["trial"]["number"] == 7
    assert packed["telemetry"]["util_pct"] == 20.4 and packed["telemetry"]["fresh"] is True
    assert packed["telemetry"]["device_memory_mb"] == 3_000.0 and packed["gpu"] is True
    assert shown[fleet["busy"]]["pack"]["size"] == 1
    assert shown[fleet["cpu"]]["gpu"] is False and shown[fleet["idle"]]["pack"]["size"] == 0


def test_only_a_busy_worker_on_an_under_used_device_gets_a_hint(viewer, ctx, fleet) -> None:
    shown = _workers(viewer)
    assert shown[fleet["packed"]]["hint"] == (
        "GPU 20 % busy with a pack of 3: a larger pack (--pack auto) would use it more"
    )
    assert shown[fleet["busy"]]["hint"] is None  # busy
    assert shown[fleet["idle"]]["hint"] is None  # low, but no trial to pack with
    assert shown[fleet["cpu"]]["hint"].startswith("CPU 15 % busy: ")
    assert "--pack" in shown[fleet["cpu"]]["hint"]
    seeding.set_telemetry(ctx, fleet["busy"], {"util_pct": 18.0})  # GPU by its devices
    assert _workers(viewer)[fleet["busy"]]["hint"] == (
        "GPU 18 % busy: run more trials per device with --pack"
    )
    seeding.set_telemetry(ctx, fleet["busy"], None)
    assert _workers(viewer)[fleet["busy"]]["hint"] is None  # no telemetry, no hint
    seeding.set_telemetry(ctx, fleet["busy"], {"util_pct": 18.0}, age_s=3600)
    stale = _workers(viewer)[fleet["busy"]]
    assert stale["telemetry"]["fresh"] is False and stale["hint"] is None
