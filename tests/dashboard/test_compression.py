"""Multi-objective compression studies on the dashboard: the Pareto chart (front the same
as the API's, drawn apart from dominated trials, coloured by compression method),
accuracy against size per method, and which studies show them.

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.synthetic import compression, seeding
from hpo.spec import StudySpec
from service.dashboard.charts import STUDY_CHARTS, charts_for
from service.dashboard.charts_pareto import non_dominated
from service.dashboard.compression import method
from service.dashboard.frame import load_meta
from service.studies.records import _non_dominated
from tests.dashboard.conftest import api as _api
from tests.dashboard.conftest import chart, values


def _front_traces(figure: dict[str, Any], on_front: bool) -> list[dict[str, Any]]:
    return [t for t in figure["data"] if (t.get("meta") or {}).get("front") is on_front]


def test_method_is_derived_from_the_compression_settings() -> None:
    assert method({}) == "none"
    assert method({"prune_amount": 0.0, "low_rank": None, "quantize": "none"}) == "none"
    assert method({"prune_amount": 0.5}) == "prune"
    assert method({"low_rank": 16, "quantize": "none"}) == "low-rank"
    assert method({"quantize": "int8"}) == "int8"
    assert method({"prune_amount": 0.3, "quantize": "int8"}) == "prune+int8"
    assert method({"prune_amount": 0.9, "low_rank": 8, "quantize": "bf16"}) == "prune+low-rank+bf16"


@pytest.mark.parametrize("objectives", [2, 3])
def test_the_front_agrees_with_the_services_pareto_front(objectives: int) -> None:
    rng = np.random.default_rng(objectives)
    for _ in range(20):
        points = rng.integers(0, 6, size=(60, objectives)).astype(float)  # many ties
        assert (non_dominated(points) == _non_dominated(points)).all()


def test_pareto_chart_draws_the_apis_front_apart_from_dominated_trials(
    viewer, compression_id
) -> None:
    body = chart(viewer, compression_id, "pareto")
    api = _api(viewer, f"/studies/{compression_id}/pareto")
    front = sorted(t["number"] for t in api["trials"])
    assert body["front"] == front and len(front) >= 3
    figure = body["figure"]
    filled, faded = _front_traces(figure, True), _front_traces(figure, False)
    assert sorted(n for t in filled for n in values(t["customdata"])) == front
    complete = _api(viewer, f"/studies/{compression_id}/trials?state=complete&limit=500")
    dominated = {t["number"] for t in complete["items"]} - set(front)
    assert {n for t in faded for n in values(t["customdata"])} == dominated
    assert all(t["marker"]["opacity"] == 1.0 and t["marker"]["line"]["width"] > 0 for t in filled)
    assert all(t["marker"]["opacity"] < 0.5 for t in faded)
    line = next(t for t in figure["data"] if t["name"] == "Pareto front")
    assert len(values(line["x"])) == len(front) and line["mode"] == "lines"
    assert figure["layout"]["xaxis"]["title"]["text"] == "val_accuracy ↑"
    assert figure["layout"]["yaxis"]["title"]["text"] == "model_bytes ↓"
    assert figure["layout"]["yaxis"]["type"] == "log"
    assert f"{len(front)} of {len(complete['items'])} complete trials" in body["note"]


def test_pareto_points_are_coloured_by_method_and_hover_names_it(viewer, compression_id) -> None:
    figure = chart(viewer, compression_id, "pareto")["figure"]
    details = {}
    for trace in _front_traces(figure, True) + _front_traces(figure, False):
        name = trace["meta"]["method"]
        assert trace["name"] == name and trace["legendgroup"] == name
        for number, text in zip(values(trace["customdata"]), trace["text"], strict=True):
            assert text.startswith(f"trial #{number}<br>val_accuracy = ")
            assert text.endswith(f"compression: {name}") and "model_bytes = " in text
            details[number] = (name, trace["marker"]["color"])
    colors = {}
    for name, color in details.values():
        assert colors.setdefault(name, color) == color  # one colour per method
    assert len(set(colors.values())) == len(colors) >= 4
    number = next(iter(details))
    trial = _api(viewer, f"/studies/{compression_id}/trials/{number}")
    assert details[number][0] == method(trial["params"])


def test_accuracy_against_size_has_one_trace_per_method_from_final_metrics(
    viewer, compression_id
) -> None:
    body = chart(viewer, compression_id, "size")
    figure = body["figure"]
    points = [t for t in figure["data"] if t["mode"] == "markers"]
    lines = [t for t in figure["data"] if t["mode"] == "lines"]
    assert len({t["name"] for t in points}) == len(points) == len(lines)
    assert figure["layout"]["xaxis"]["type"] == "log"
    trace = max(points, key=lambda t: len(values(t["x"])))
    number = values(trace["customdata"])[0]
    detail = _api(viewer, f"/studies/{compression_id}/trials/{number}")
    final = detail["user_attrs"]["final_metrics"]
    assert values(trace["x"])[0] == final["model_bytes"]
    assert values(trace["y"])[0] == pytest.approx(final["val_accuracy"])
    assert trace["name"] == method(detail["params"])
    shown = sum(len(values(t["x"])) for t in points)
    complete = _api(viewer, f"/studies/{compression_id}/trials?state=complete&limit=500")
    assert shown == len(complete["items"])


def test_three_objectives_are_drawn_in_3d(viewer, ctx) -> None:
    spec = compression.three_objective_spec("three")
    sid = seeding.seed_bulk(ctx, spec, 80, seed=6, simulate=compression.simulate_three)
    body = chart(viewer, sid, "pareto")
    assert {t["type"] for t in body["figure"]["data"]} == {"scatter3d"}
    front = sorted(t["number"] for t in _api(viewer, f"/studies/{sid}/pareto")["trials"])
    assert body["front"] == front
    scene = body["figure"]["layout"]["scene"]
    assert scene["zaxis"]["title"]["text"] == "latency_ms_b1 ↓"


def test_compression_charts_show_only_for_studies_that_have_them(
    viewer, ctx, study_id, compression_id
) -> None:
    with ctx.db.session() as session:
        demo_charts = [c.name for c in charts_for(load_meta(session, study_id))]
        comp_charts = [c.name for c in charts_for(load_meta(session, compression_id))]
    assert "pareto" not in demo_charts and "size" not in demo_charts
    assert comp_charts[:2] == ["pareto", "size"]
    page = viewer.get(f"/dashboard/studies/{study_id}").text
    assert 'data-chart="pareto"' not in page and 'data-chart="size"' not in page
    page = viewer.get(f"/dashboard/studies/{compression_id}").text
    assert page.index('data-chart="pareto"') < page.index('data-chart="size"')
    assert page.index('data-chart="size"') < page.index('data-chart="optimizers"')
    # asked for anyway, they say why there is nothing to draw
    assert "two or more objectives" in chart(viewer, study_id, "pareto")["message"]
    assert "model as shipped" in chart(viewer, study_id, "size")["message"]
    empty = seeding.create_study(ctx, compression.compression_spec("no-trials"))
    for name in ("pareto", "size"):
        assert "No trials yet" in chart(viewer, empty, name)["message"]


def test_compression_charts_refresh_when_a_trial_completes(viewer, ctx, compression_id) -> None:
    import optuna

    first = chart(viewer, compression_id, "pareto")
    study = optuna.load_study(study_name="mnist-compression", storage=ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical("quantize", list(compression.BYTES_PER))
    trial.set_user_attr("final_metrics", {"val_accuracy": 0.999, "model_bytes": 10})
    study.tell(trial, [0.999, 10.0])  # dominates every other trial
    body = chart(viewer, compression_id, "pareto")
    assert body["version"] != first["version"] and body["front"] == [trial.number]
    size = chart(viewer, compression_id, "size")["figure"]
    found = [t for t in size["data"] if trial.number in values(t.get("customdata") or [])]
    assert [t["name"] for t in found] == [method(trial.params)]


def test_method_names_are_escaped(viewer, ctx) -> None:
    raw = compression.compression_spec("x").model_dump(mode="json")
    raw["workload"] = "synthetic"  # any quantize string is allowed outside the trainer
    raw["space"]["quantize"]["choices"] = ["none", "<img src=x onerror=alert(1)>"]
    spec = StudySpec.model_validate(raw)
    sid = seeding.seed_ask_tell(ctx, spec, 16, seed=2, simulate=compression.simulate)
    for name in ("pareto", "size"):
        text = viewer.get(f"/api/v1/dashboard/studies/{sid}/charts/{name}").text
        assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text, name


def test_single_objective_studies_keep_their_charts(viewer, study_id) -> None:
    names = [c.name for c in STUDY_CHARTS.values() if c.name not in ("pareto", "size")]
    page = viewer.get(f"/dashboard/studies/{study_id}").text
    assert all(f'data-chart="{n}"' in page for n in names)
