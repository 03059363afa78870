"""plotly.js bundles per chart family: each chart's traces are in the bundle it declares,
and the bundles are served like every static file (no browser here: see
test_browser.py for the drawing under the CSP)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.dashboard import bundles, static
from service.dashboard.charts import COMPARE_CHARTS, STUDY_CHARTS
from service.dashboard.frame import load_meta
from service.dashboard.static import FILES
from tests.dashboard.conftest import chart


def _trace_types(figure: dict | None) -> set[str]:
    return {t.get("type", "scatter") for t in (figure or {}).get("data", [])}


#: What bundle a chart needs does not depend on the database: SQLite only.
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
#: The compression study's own charts (the others are the optimizer study's).
COMPRESSION_CHARTS = ("pareto", "size")


@SQLITE
def test_every_study_chart_declares_a_bundle_that_draws_its_traces(
    viewer, ctx, study_id, compression_id
) -> None:
    from bench.synthetic import compression, seeding

    spec = compression.three_objective_spec("three")
    three = seeding.seed_bulk(ctx, spec, 40, seed=7, simulate=compression.simulate_three)
    seen: set[str] = set()
    for name, chart_spec in STUDY_CHARTS.items():
        studies = [compression_id, three] if name in COMPRESSION_CHARTS else [study_id]
        for study in studies:
            with ctx.db.session() as session:
                family = chart_spec.family(load_meta(session, study))
            types = _trace_types(chart(viewer, study, name)["figure"])
            seen |= types
            missing = {t for t in types if not bundles.draws(family, t)}
            assert not missing, f"chart {name} ({family}) of study {study} draws {missing}"
    # The check bites: the study charts really draw 2-D, 3-D and WebGL traces.
    assert {"scatter", "box", "contour", "parcoords", "scatter3d"} <= seen
    assert not bundles.draws(bundles.CARTESIAN, "parcoords")


@SQLITE
def test_compare_and_trial_charts_draw_with_the_cartesian_bundle(viewer, study_id, ctx) -> None:
    from bench.synthetic import demo, seeding

    other = seeding.seed_bulk(ctx, demo.demo_spec("other"), 20, seed=2)
    for name in COMPARE_CHARTS:
        answer = viewer.get(f"/api/v1/dashboard/compare/{name}?ids={study_id},{other}").json()
        types = _trace_types(answer["figure"])
        assert types and all(bundles.draws(bundles.CARTESIAN, t) for t in types), (name, types)
    trial = viewer.get(f"/api/v1/dashboard/studies/{study_id}/trials/0/chart").json()
    assert _trace_types(trial["figure"]) <= bundles.CARTESIAN_TRACES


def test_the_cartesian_bundle_is_plotly_js_at_the_strict_builds_version() -> None:
    app = FastAPI()
    app.include_router(static.router)  # static files need no database and no token
    urls = bundles.urls()
    assert set(urls) == {bundles.CARTESIAN, bundles.STRICT}
    heads = {}
    with TestClient(app) as client:
        for family, url in urls.items():
            coding = "br" if family == bundles.CARTESIAN else "identity"  # (brotli: 5 s)
            answer = client.get(url, headers={"Accept-Encoding": coding})
            assert answer.status_code == 200
            assert answer.headers.get("content-encoding", "identity") == coding
            assert answer.headers["cache-control"].endswith("immutable")
            heads[family] = answer.text[:200]
    assert "(cartesian - minified)" in heads[bundles.CARTESIAN]
    version = re.compile(r"plotly\.js \([a-z -]+\) v(\d+\.\d+\.\d+)")
    found = {family: version.search(head) for family, head in heads.items()}
    assert all(found.values()), heads
    assert found[bundles.CARTESIAN].group(1) == found[bundles.STRICT].group(1)  # type: ignore[union-attr]
    cartesian = Path(FILES[bundles.FILES[bundles.CARTESIAN]][0]).stat().st_size
    strict = Path(FILES[bundles.FILES[bundles.STRICT]][0]).stat().st_size
    assert cartesian < strict / 3  # the point of it: 1.5 MB against 5.2 MB


def test_the_cartesian_bundle_evaluates_no_strings() -> None:
    """Its one ``Function(...)`` is function-bind's polyfill, behind the native
    ``Function.prototype.bind``; no ``eval``. The browser test proves it draws."""
    text = Path(FILES[bundles.FILES[bundles.CARTESIAN]][0]).read_text()
    assert not re.search(r"(?<![\w.$])eval\(", text)
    calls = re.findall(r"(?<![\w.$])(?:new )?Function\(", text)
    assert len(calls) == 1 and 'Function("binder"' in text
    assert "Function.prototype.bind||" in text
