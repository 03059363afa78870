"""Chart endpoints: the shape of each figure (traces per optimizer, log axes), empty
states, caching by version and the incremental learning-curve deltas.

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import optuna
import pytest

from bench.synthetic import demo, seeding
from service.dashboard.charts import STUDY_CHARTS, charts_for
from service.dashboard.frame import load_meta
from service.storage.models import TrialMetric
from tests.dashboard.conftest import chart, values

OPTIMIZERS = set(demo.OPTIMIZERS)


def _curve_traces(figure: dict) -> list[dict]:
    return [t for t in figure["data"] if "mark" not in (t.get("meta") or {})]


def test_every_chart_answers_a_figure(viewer, ctx, study_id) -> None:
    with ctx.db.session() as session:
        shown = [c.name for c in charts_for(load_meta(session, study_id))]
    assert shown == [n for n in STUDY_CHARTS if n not in ("pareto", "size")]
    for name in shown:
        body = chart(viewer, study_id, name)
        assert body["chart"] == name
        assert body["message"] is None, (name, body["message"])
        assert body["figure"]["data"], name
        assert body["version"]


def test_charts_need_a_token(client, study_id) -> None:
    response = client.get(f"/api/v1/dashboard/studies/{study_id}/charts/lr")
    assert response.status_code == 401
    assert client.get("/api/v1/dashboard/studies/999/charts/lr").status_code == 401


def test_unknown_chart_and_study_are_404(viewer, study_id) -> None:
    assert viewer.get(f"/api/v1/dashboard/studies/{study_id}/charts/nope").status_code == 404
    assert viewer.get("/api/v1/dashboard/studies/999/charts/lr").status_code == 404


def _optuna_values(ctx, name: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Each optimizer's objective values, read through Optuna (not the dashboard)."""
    study = optuna.load_study(study_name=name, storage=ctx.store.storage)
    out: dict[str, list[float]] = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        out.setdefault(t.params["optimizer"], []).append(t.value)
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_box_statistics(box: dict, expected: np.ndarray) -> np.ndarray:
    """The box's precomputed statistics are numpy's over Optuna's values (Plotly's
    quartile method, 'linear', is numpy's 'hazen'); returns the points outside the
    whiskers."""
    q1, median, q3 = np.percentile(expected, [25, 50, 75], method="hazen")
    reach = 1.5 * (q3 - q1)
    inside = expected[(expected >= q1 - reach) & (expected <= q3 + reach)]
    assert box["q1"] == [pytest.approx(q1)] and box["q3"] == [pytest.approx(q3)]
    assert box["median"] == [pytest.approx(median)]
    assert box["lowerfence"] == [pytest.approx(inside.min())]
    assert box["upperfence"] == [pytest.approx(inside.max())]
    return np.sort(expected[(expected < q1 - reach) | (expected > q3 + reach)])


def test_optimizer_comparison_has_a_box_and_a_best_star_per_optimizer(
    viewer, ctx, study_id
) -> None:
    body = chart(viewer, study_id, "optimizers")
    data = body["figure"]["data"]
    boxes = [t for t in data if t["type"] == "box"]
    stars = [t for t in data if t["type"] == "scatter"]
    assert {b["name"] for b in boxes} == OPTIMIZERS
    assert len(stars) == len(boxes)
    expected = _optuna_values(ctx, "mnist-demo")
    for box, star in zip(boxes, stars, strict=True):
        assert star["x"] == [box["name"]] == box["x"]
        assert star["marker"]["symbol"] == "star"
        assert star["y"][0] == pytest.approx(expected[box["name"]].max())  # the study maximizes
        _assert_box_statistics(box, expected[box["name"]])
        # a small study: every trial is a point, with its number for click-through
        [points], [numbers] = box["y"], box["customdata"]
        assert sorted(points) == pytest.approx(sorted(expected[box["name"]]))
        assert len(numbers) == len(points) and len(box["text"][0]) == len(points)
    assert body["note"] is None


def test_big_box_charts_send_statistics_and_outliers_only(viewer, ctx, monkeypatch) -> None:
    from service.dashboard import charts_params

    monkeypatch.setattr(charts_params, "BOX_POINTS_LIMIT", 10)  # 120 trials count as big
    sid = seeding.seed_bulk(ctx, demo.demo_spec("many"), 120, seed=6)
    body = chart(viewer, sid, "optimizers")
    expected = _optuna_values(ctx, "many")
    boxes = [t for t in body["figure"]["data"] if t["type"] == "box"]
    assert {b["name"] for b in boxes} == set(expected)
    for box in boxes:
        outliers = _assert_box_statistics(box, expected[box["name"]])
        [points], [numbers] = box.get("y", [[]]), box.get("customdata", [[]])
        assert sorted(points) == pytest.approx(outliers.tolist())
        assert len(numbers) == len(outliers)
    complete = sum(len(v) for v in expected.values())
    assert "outliers only" in body["note"] and f"{complete} trials" in body["note"]
    assert sum(len(b.get("y", [[]])[0]) for b in boxes) < complete
    batch = chart(viewer, sid, "batch_norm")["figure"]["data"]
    assert all(t["boxpoints"] is False and "y" not in t for t in batch)


def test_box_statistics_draw_a_spread_of_many_outliers(monkeypatch) -> None:
    from service.dashboard import boxstats

    monkeypatch.setattr(boxstats, "OUTLIER_LIMIT", 5)
    values = np.concatenate([np.full(100, 0.9), np.linspace(0.0, 0.5, 20), [2.0]])
    stats = boxstats.box_stats(values)
    assert stats.q1 == stats.median == stats.q3 == 0.9 and stats.outliers == 21
    drawn = np.sort(values[stats.points])
    assert len(drawn) == 5 and drawn[0] == 0.0 and drawn[-1] == 2.0  # extremes kept
    note = boxstats.points_note(121, [stats], all_points=False)
    assert note is not None and "5 of 21 outliers" in note


def test_learning_rate_chart_is_log_x_and_coloured_by_optimizer(viewer, study_id) -> None:
    figure = chart(viewer, study_id, "lr")["figure"]
    assert figure["layout"]["xaxis"]["type"] == "log"
    names = [t["name"] for t in figure["data"]]
    assert set(names) == OPTIMIZERS and len(names) == len(OPTIMIZERS)
    colors = {t["marker"]["color"] for t in figure["data"]}
    assert len(colors) == len(OPTIMIZERS)
    # lr_sgd and lr_adaptive both set the training setting `lr`: every trial is on the chart
    assert sum(len(values(t["x"])) for t in figure["data"]) > 50


def test_regularization_panels_use_log_axes_where_the_space_is_log(viewer, study_id) -> None:
    layout = chart(viewer, study_id, "regularization")["figure"]["layout"]
    titles = [a["text"] for a in layout["annotations"]]
    assert titles == ["weight_decay", "l1", "dropout"]
    assert layout["xaxis"]["type"] == "log"  # weight_decay
    assert layout["xaxis2"]["type"] == "log"  # l1
    assert layout["xaxis3"]["type"] == "linear"  # dropout


def test_batch_norm_compares_on_and_off(viewer, study_id) -> None:
    data = chart(viewer, study_id, "batch_norm")["figure"]["data"]
    assert [t["name"] for t in data] == ["batch norm on", "batch norm off"]


def test_learning_curves_one_trace_per_optimizer_and_pruned_marked(viewer, study_id) -> None:
    body = chart(viewer, study_id, "curves")
    figure = body["figure"]
    curves = _curve_traces(figure)
    assert {t["name"] for t in curves} <= OPTIMIZERS and len(curves) >= 5
    marks = {t["meta"]["mark"]: t for t in figure["data"] if "mark" in (t.get("meta") or {})}
    assert set(marks) == {"PRUNED", "FAIL"}
    assert marks["PRUNED"]["customdata"], "the seeded study has pruned trials"
    assert marks["PRUNED"]["marker"]["symbol"] == "x"
    # hover carries the trial's settings
    assert any("lr = " in (text or "") for t in curves for text in t["text"])
    assert body["cursor"] > 0 and body["running"] == []


def test_search_space_charts(viewer, study_id) -> None:
    """History, importance, contour, parallel coordinates and slices: one implementation
    each (drawn from the frame; importance is Optuna's PED-ANOVA)."""
    history = chart(viewer, study_id, "history")["figure"]
    best = next(t for t in history["data"] if t["name"] == "Best Value")
    assert best["line"]["shape"] == "hv"
    points = next(t for t in history["data"] if t["name"] == "val_accuracy")
    assert max(values(best["y"])) == pytest.approx(max(values(points["y"])))
    importance = chart(viewer, study_id, "importance")
    assert set(importance["figure"]["data"][0]["y"]) >= {"lr", "optimizer", "weight_decay"}
    assert "PED-ANOVA" in importance["figure"]["layout"]["title"]["text"]
    contour = chart(viewer, study_id, "contour")["figure"]
    assert contour["data"][0]["type"] == "contour"
    assert contour["layout"]["xaxis"]["title"]["text"] == "lr"
    assert contour["layout"]["xaxis"]["type"] == "log"
    assert contour["layout"]["yaxis"]["type"] == "log"
    parallel = chart(viewer, study_id, "parallel")["figure"]["data"][0]
    labels = [d["label"] for d in parallel["dimensions"]]
    assert labels[0] == "val_accuracy" and "lr (log10)" in labels and "optimizer" in labels
    slices = chart(viewer, study_id, "slice")["figure"]
    assert len([t for t in slices["data"] if t["type"] == "scatter"]) >= 6
    assert slices["layout"]["xaxis"]["type"] == "-"  # optimizer: categorical


def test_empty_study_shows_messages_not_broken_charts(viewer, ctx) -> None:
    sid = seeding.create_study(ctx, demo.demo_spec("empty"))
    for name in STUDY_CHARTS:
        body = chart(viewer, sid, name)
        assert body["figure"] is None and body["message"], name


def test_only_failed_trials_says_so(viewer, ctx) -> None:
    spec = demo.demo_spec("failing")
    sid = seeding.create_study(ctx, spec)
    study = optuna.load_study(study_name=spec.name, storage=ctx.store.storage)
    for _ in range(3):
        trial = study.ask()
        trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    for name in ("optimizers", "lr", "regularization", "history", "importance"):
        body = chart(viewer, sid, name)
        assert body["figure"] is None
        assert "All 3 trials failed" in body["message"], name


def test_single_optimizer_study(viewer, ctx) -> None:
    sid = seeding.seed_bulk(ctx, demo.demo_spec("adam-only", ["adam"]), 30, seed=2)
    body = chart(viewer, sid, "optimizers")
    assert body["figure"] is None and "Only one optimizer (adam)" in body["message"]
    lr = chart(viewer, sid, "lr")["figure"]  # still drawn, one colour
    assert [t["name"] for t in lr["data"]] == ["adam"]


def test_figures_are_cached_per_version(viewer, app, ctx, study_id) -> None:
    answers = app.state.dashboard.answers
    first = chart(viewer, study_id, "lr")
    misses = answers.misses
    again = chart(viewer, study_id, "lr")
    assert again == first and answers.misses == misses
    spec = demo.demo_spec("mnist-demo")
    study = optuna.load_study(study_name=spec.name, storage=ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    study.tell(trial, 0.5)
    changed = chart(viewer, study_id, "lr")
    assert changed["version"] != first["version"] and answers.misses == misses + 1


def test_curve_delta_sends_only_new_rows_and_ended_trials(viewer, ctx, study_id) -> None:
    base = chart(viewer, study_id, "curves")
    spec = demo.demo_spec("mnist-demo")
    study = optuna.load_study(study_name=spec.name, storage=ctx.store.storage)
    study.enqueue_trial({"optimizer": "adam"})
    trial = study.ask()
    assert trial.suggest_categorical("optimizer", demo.OPTIMIZERS) == "adam"
    url = f"/api/v1/dashboard/studies/{study_id}/curves"
    nothing = viewer.get(url, params={"since": base["cursor"]}).json()
    assert nothing["rows"] == [] and nothing["cursor"] == base["cursor"]
    with ctx.db.session() as session:
        for epoch in (1, 2):
            session.add(
                TrialMetric(
                    study_id=study_id,
                    optuna_trial_id=trial._trial_id,
                    attempt=1,
                    step=epoch,
                    value=0.9 + epoch / 100,
                    metrics={"val_accuracy": 0.9 + epoch / 100},
                    created_at=datetime.now(UTC),
                )
            )
    delta = viewer.get(url, params={"since": base["cursor"]}).json()
    assert [(r["number"], r["epoch"], r["key"]) for r in delta["rows"]] == [
        (trial.number, 1, "adam"),
        (trial.number, 2, "adam"),
    ]
    assert delta["running"] == [trial.number] and delta["cursor"] > base["cursor"]
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    ended = viewer.get(url, params={"since": delta["cursor"], "watch": str(trial.number)}).json()
    assert ended["rows"] == [] and ended["ended"] == [{"number": trial.number, "state": "PRUNED"}]


def test_compare_charts_overlay_studies(viewer, ctx, study_id) -> None:
    other = seeding.seed_bulk(ctx, demo.demo_spec("other", ["sgd", "adam"]), 40, seed=5)
    ids = f"{study_id},{other}"
    histories = viewer.get("/api/v1/dashboard/compare/histories", params={"ids": ids}).json()
    assert [t["name"] for t in histories["figure"]["data"]] == [
        f"mnist-demo (#{study_id})",
        f"other (#{other})",
    ]
    dist = viewer.get("/api/v1/dashboard/compare/distributions", params={"ids": ids}).json()
    assert [t["type"] for t in dist["figure"]["data"]] == ["violin", "scatter"] * 2


def test_html_in_names_and_values_is_escaped_in_figures(viewer, ctx) -> None:
    spec = demo.demo_spec("x", ["adam", "<b onmouseover=alert(1)>bold</b>"])
    sid = seeding.seed_ask_tell(ctx, spec, 12, seed=9, external_name="<script>alert(1)</script>")
    for name in STUDY_CHARTS:
        text = viewer.get(f"/api/v1/dashboard/studies/{sid}/charts/{name}").text
        assert "<b onmouseover" not in text and "<script>" not in text, name
    data = chart(viewer, sid, "optimizers")["figure"]["data"]
    assert "&lt;b onmouseover=alert(1)&gt;bold&lt;/b&gt;" in {t.get("name") for t in data}


def test_curve_delta_too_big_asks_for_a_reload(viewer, study_id, monkeypatch) -> None:
    from service.dashboard import charts_curves

    monkeypatch.setattr(charts_curves, "DELTA_LIMIT", 10)
    url = f"/api/v1/dashboard/studies/{study_id}/curves"
    assert viewer.get(url, params={"since": 0}).json() == {"reset": True, "cursor": 0}


def test_big_studies_get_the_previous_figure_while_rebuilding(
    viewer, app, ctx, study_id, monkeypatch
) -> None:
    from service.dashboard import state

    monkeypatch.setattr(state, "STALE_OK_TRIALS", 10)
    monkeypatch.setattr(state, "FRESH_BUILD_S", 0.0)  # every build counts as slow
    # The start-up warming builds the first charts too: let it finish, so that it does
    # not build "lr" at the new version behind the test's back (it did, now and then).
    assert app.state.dashboard.warmed.wait(timeout=60)
    first = chart(viewer, study_id, "lr")
    study = optuna.load_study(study_name="mnist-demo", storage=ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    study.tell(trial, 0.5)
    stale = chart(viewer, study_id, "lr")
    assert stale["version"] == first["version"]  # answered at once, from the cache
    assert app.state.dashboard.answers.idle(timeout_s=60)
    fresh = chart(viewer, study_id, "lr")
    assert fresh["version"] != first["version"]
    assert (
        fresh["version"]
        == viewer.get(f"/api/v1/dashboard/studies/{study_id}/version").json()["trials"]
    )


def test_history_of_a_big_study_samples_points_and_draws_a_quantile_band(
    viewer, study_id, monkeypatch
) -> None:
    """Above HISTORY_POINTS trials (4,000; 40 here) the points are sampled and a band of
    the 10-90 % quantiles per bin of trials stands for all of them, as the note says;
    the best-so-far line keeps only its steps, and stays exact."""
    from service.dashboard import charts_space

    full = chart(viewer, study_id, "history")
    assert full["note"] is None and len(full["figure"]["data"]) == 2
    monkeypatch.setattr(charts_space, "HISTORY_POINTS", 40)
    monkeypatch.setattr(charts_space, "BAND_BINS", 9)
    viewer.app.state.dashboard.forget(study_id)
    big = chart(viewer, study_id, "history")
    assert "showing 40 of" in big["note"] and "the band: 10-90 %" in big["note"]
    traces = {t["name"]: t for t in big["figure"]["data"]}
    low, high, mid = traces["10 %"], traces["10-90 % of trials"], traces["median of trials"]
    assert high["fill"] == "tonexty" and len(values(low["x"])) == 9
    bands = zip(values(low["y"]), values(mid["y"]), values(high["y"]), strict=True)
    assert all(a <= m <= b for a, m, b in bands)
    points = values(traces["val_accuracy"]["y"])
    assert len(points) == 40
    best = traces["Best Value"]
    full_best = next(t for t in full["figure"]["data"] if t["name"] == "Best Value")
    assert values(best["y"]) == values(full_best["y"])  # the line is the same, exact
    assert len(values(best["y"])) < len(points)  # only its steps, not a point per trial
    assert max(values(best["y"])) == pytest.approx(max(values(full_best["y"])))
    assert values(best["x"])[-1] == values(full_best["x"])[-1]  # the line reaches the end


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_big_studys_counts_move_on_the_first_poll_when_its_header_builds_fast(
    viewer, app, ctx, study_id, monkeypatch
) -> None:
    """Above STALE_OK_TRIALS the header (trials per state) is served stale while rebuilt
    only when it is slow to build; a fast one is rebuilt at once, so the poll right after
    a trial ends shows it (the live update)."""
    from service.dashboard import state

    monkeypatch.setattr(state, "STALE_OK_TRIALS", 10)
    url = f"/api/v1/dashboard/studies/{study_id}/version"
    study = optuna.load_study(study_name="mnist-demo", storage=ctx.store.storage)

    def finish_one() -> None:
        trial = study.ask()
        trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
        study.tell(trial, 0.5)

    before = viewer.get(url).json()["counts"]["complete"]
    finish_one()
    assert viewer.get(url).json()["counts"]["complete"] == before + 1  # fast: at once
    monkeypatch.setattr(state, "FRESH_BUILD_S", 0.0)  # every header now counts as slow
    viewer.get(url)  # (records its build time)
    finish_one()
    assert viewer.get(url).json()["counts"]["complete"] == before + 1  # the previous one
    assert app.state.dashboard.answers.idle(timeout_s=60)
    assert viewer.get(url).json()["counts"]["complete"] == before + 2


def test_start_up_warming_builds_the_first_charts_and_header_of_recent_studies(
    ctx, study_id
) -> None:
    """``prewarm`` (what ``mount`` starts) builds what a study page asks for first, so
    that a first visit to a server that has been up finds it cached."""
    from service.dashboard import api, state

    dash = state.DashboardState(ctx)
    state.prewarm(dash, warm=lambda sid: api.warm_study(dash, sid))
    assert dash.warmed.wait(timeout=60) and dash.warm_s is not None
    with ctx.db.session() as session:
        first = [c.name for c in charts_for(load_meta(session, study_id))][:2]
    assert dash.answers.peek((study_id, "header")) is not None
    for name in first:
        assert dash.answers.peek((study_id, "chart", name)) is not None, name
