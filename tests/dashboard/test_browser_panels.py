"""The compression charts, the diagnosis panel, the trial page's findings and before/after,
the workers page's packs and live utilisation, in headless Chromium against a real
uvicorn server (auth on); and the README's screenshot of a study page.

    HPO_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/dashboard/test_browser_panels.py -k screenshot

writes docs/dashboard.png; without it the screenshot goes to a temporary folder and
the test checks that the committed one is there and sensible.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic import compression, demo, seeding
from tests.dashboard.conftest import LiveServer, Watched

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard.png"
HOSTILE = "<img src=x onerror=alert(1)>"
#: The pixel position of a point of a plot (data -> page coordinates, by Plotly's axes).
POINT_XY = """([id, trace, i]) => {
  const gd = document.querySelector(`[data-chart=${id}] .js-plotly-plot`);
  const t = gd._fullData[trace], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.getBoundingClientRect();
  return [box.left + xa._offset + xa.c2p(t.x[i]), box.top + ya._offset + ya.c2p(t.y[i])];
}"""


def _assert_clean(watched: Watched) -> None:
    assert watched.errors == [], watched.errors
    assert watched.dialogs == [], watched.dialogs


def _study(watched: Watched, server: LiveServer, study_id: int) -> Any:
    tab = watched.page
    tab.goto(f"{server.base}/dashboard/studies/{study_id}")
    return tab


def _plot_data(tab: Any, chart: str) -> list[dict[str, Any]]:
    script = f"() => document.querySelector('[data-chart={chart}] .js-plotly-plot')._fullData" + (
        ".map(t => ({name: t.name, mode: t.mode, meta: t.meta || null,"
        " customdata: Array.from(t.customdata || []), x: Array.from(t.x || []),"
        " y: Array.from(t.y || [])}))"
    )
    return tab.evaluate(script)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- charts


def test_pareto_chart_hovers_and_a_click_opens_the_trial(page: Watched, live_server) -> None:
    tab = _study(page, live_server, live_server.compression_study_id)
    tab.wait_for_selector("[data-chart=pareto] .main-svg")
    data = _plot_data(tab, "pareto")
    fronts = [(i, t) for i, t in enumerate(data) if t["meta"] and t["meta"]["front"]]
    assert fronts and any(t["meta"] and not t["meta"]["front"] for t in data)
    assert data[0]["name"] == "Pareto front" and data[0]["mode"] == "lines"
    index, trace = fronts[0]
    target = (trace["x"][0], trace["y"][0])
    same = {
        n
        for t in data
        if t["meta"]
        for n, x, y in zip(t["customdata"], t["x"], t["y"], strict=True)
        if (x, y) == target
    }
    x, y = tab.evaluate(POINT_XY, ["pareto", index, 0])
    tab.mouse.move(x, y)
    tab.wait_for_selector("[data-chart=pareto] .hoverlayer .hovertext")
    hover = tab.locator("[data-chart=pareto] .hoverlayer .hovertext").text_content()
    assert "compression: " + trace["meta"]["method"] in hover and "model_bytes = " in hover
    tab.mouse.click(x, y)
    tab.wait_for_url(re.compile(r".*/trials/\d+$"))
    assert int(tab.url.rsplit("/", 1)[1]) in same
    tab.wait_for_selector("#before-after")  # a compression trial's page
    _assert_clean(page)


#: Distinct colours in a PNG of a chart as Plotly exports it (WebGL scenes read back
#: from their canvas): a scene that failed to draw is one flat background colour.
EXPORTED_COLOURS = """async (id) => {
  const gd = document.querySelector(`[data-chart=${id}] .js-plotly-plot`);
  const url = await window.Plotly.toImage(gd, {format: "png", width: 600, height: 450});
  const img = new Image();
  img.src = url;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = 600; canvas.height = 450;
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0);
  const px = g.getImageData(150, 100, 300, 250).data;  // inside the scene, off the legend
  const colours = new Set();
  for (let i = 0; i < px.length; i += 4) colours.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
  return colours.size;
}"""


def test_three_objectives_draw_a_3d_front_under_the_csp(page: Watched, live_server) -> None:
    spec = compression.three_objective_spec("three-browser")
    sid = seeding.seed_bulk(live_server.ctx, spec, 60, seed=7, simulate=compression.simulate_three)
    tab = _study(page, live_server, sid)
    chart = tab.locator("[data-chart=pareto]")
    chart.scroll_into_view_if_needed()
    tab.wait_for_selector("[data-chart=pareto] .gl-container canvas")
    assert "WebGL is not supported" not in chart.inner_text()
    assert tab.evaluate(EXPORTED_COLOURS, "pareto") > 20  # measured 284 when drawn
    _assert_clean(page)


def test_accuracy_against_size_draws_one_trace_per_method(page: Watched, live_server) -> None:
    tab = _study(page, live_server, live_server.compression_study_id)
    tab.wait_for_selector("[data-chart=size] .main-svg")
    data = _plot_data(tab, "size")
    methods = [t["name"] for t in data if t["mode"] == "markers"]
    assert len(methods) == len(set(methods)) >= 3
    legend = tab.locator("[data-chart=size] .legend .legendtext").all_text_contents()
    assert sorted(legend) == sorted(methods)
    assert tab.locator("[data-chart=optimizers]").count() == 1  # other charts still follow
    _assert_clean(page)


# --------------------------------------------------------------------------- diagnosis


def test_a_healthy_study_shows_nothing_alarming(page: Watched, live_server) -> None:
    tab = _study(page, live_server, live_server.compression_study_id)
    summary = tab.locator("#diagnosis-summary")
    summary.filter(has_text="No problem found").wait_for()
    assert summary.get_attribute("class") == "ok"
    assert tab.locator("#diagnosis-proposals").is_hidden()
    _assert_clean(page)


def test_the_diagnosis_panel_shows_findings_and_proposed_edits(page: Watched, live_server) -> None:
    spec = demo.demo_spec("bad-region", ["sgd", "adam"])
    sid = seeding.seed_bulk(live_server.ctx, spec, 200, seed=1, workers=live_server.workers)
    tab = _study(page, live_server, sid)
    tab.wait_for_selector("#diagnosis-proposals li")
    chips = tab.locator("#diagnosis-findings li").all_text_contents()
    assert len(chips) == 1 and re.fullmatch(r"diverged: \d+ trials", chips[0])
    proposal = tab.locator("#diagnosis-proposals li").inner_text()
    assert "narrow lr_adaptive to high: 0.02" in proposal
    assert "edit: space.lr_adaptive.high: 0.1 → 0.02" in proposal
    assert "1 proposed change" in tab.locator("#diagnosis-summary").inner_text()
    _assert_clean(page)


def test_diagnosis_text_is_shown_as_text(page: Watched, live_server) -> None:
    hostile = {
        "study": "x",
        "trials": 9,
        "version": "1",
        "external": False,
        "findings": {HOSTILE: 9},
        "proposals": [{"message": HOSTILE, "edit": {"path": HOSTILE, "old": HOSTILE, "new": 1}}],
    }
    page.page.route("**/diagnosis", lambda route: route.fulfill(json=hostile))
    tab = _study(page, live_server, live_server.study_id)
    tab.wait_for_selector("#diagnosis-proposals li")
    assert HOSTILE in tab.locator("#diagnosis-proposals li .message").inner_text()
    assert HOSTILE in tab.locator("#diagnosis-findings").inner_text()
    assert tab.locator("img[src=x]").count() == 0
    tab.wait_for_timeout(300)
    _assert_clean(page)


# --------------------------------------------------------------------------- trial page


def test_trial_page_shows_findings_next_to_marked_curves(page: Watched, live_server) -> None:
    tab = page.page
    study = live_server.study_id
    tab.goto(f"{live_server.base}/dashboard/studies/{study}")
    tab.select_option("#trial-filters select[name=state]", "FAIL")
    tab.wait_for_function(
        "() => Array.from(document.querySelectorAll('#trials-body .badge'))"
        ".every(b => b.textContent === 'fail')"
    )
    tab.locator("#trials-body tr td a").first.click()
    tab.wait_for_selector("[data-trial-chart] .main-svg")
    finding = tab.locator("#findings .finding").first
    assert "diverged" in finding.inner_text() and "from epoch" in finding.inner_text()
    shapes = tab.evaluate(
        "() => document.querySelector('[data-trial-chart] .js-plotly-plot').layout.shapes.length"
    )
    assert shapes == 2  # the epoch marked on both panels
    assert "device utilisation, mean" in tab.locator("#telemetry").inner_text()
    chart = tab.locator("[data-trial-chart]").bounding_box()
    side = tab.locator("#findings").bounding_box()
    assert side["x"] > chart["x"] + chart["width"] - 5 and abs(side["y"] - chart["y"]) < 5
    _assert_clean(page)


# --------------------------------------------------------------------------- workers


def test_workers_page_shows_packs_utilisation_and_hints_live(
    page: Watched, live_server: LiveServer
) -> None:
    busy, packed, silent, cpu = live_server.workers
    tab = page.page
    tab.goto(f"{live_server.base}/dashboard/workers")
    row = tab.locator(f"#workers-body tr[data-worker='{packed}']")
    row.filter(has_text="pack of 3").wait_for()
    links = row.locator("td.pack a")
    assert links.all_text_contents() == [f"#{n}" for n in live_server.pack]
    numbers = ", ".join(f"#{n}" for n in live_server.pack)
    assert f"pack of 3 mnist-compression {numbers}" in row.locator("td.pack").inner_text()
    assert "GPU 20 % · CPU 12 %" in row.inner_text()
    hint = "GPU 20 % busy with a pack of 3: a larger pack (--pack auto) would use it more"
    assert row.locator(".hint-text").inner_text() == hint
    assert row.locator("meter").get_attribute("value") == "20"
    assert "GPU 93 %" in tab.locator(f"tr[data-worker='{busy}']").inner_text()
    for quiet in (busy, silent):  # busy; no telemetry
        assert tab.locator(f"tr[data-worker='{quiet}'] .hint-text").count() == 0
    assert tab.locator(f"tr[data-worker='{cpu}'] .hint-text").inner_text().startswith("CPU 15 %")
    seeding.set_telemetry(live_server.ctx, packed, {"util_pct": 88.0, "device_memory_mb": 9e3})
    try:
        row.filter(has_text="GPU 88 %").wait_for(timeout=15_000)  # no reload: the page polls
        assert row.locator(".hint-text").count() == 0
    finally:
        seeding.set_telemetry(
            live_server.ctx,
            packed,
            {"util_pct": 20.0, "cpu_pct": 12.0, "device_memory_mb": 3_200.0},
        )
    links.nth(1).click()
    tab.wait_for_url(f"**/studies/{live_server.compression_study_id}/trials/{live_server.pack[1]}")
    _assert_clean(page)


# --------------------------------------------------------------------------- README screenshot


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])  # type: ignore[return-value]


def test_screenshot_of_a_study_page(browser: Any, live_server: LiveServer, tmp_path) -> None:
    """docs/dashboard.png (the README's): a study page at 1280x900 with its first charts
    drawn. Written there with HPO_UPDATE_SCREENSHOT=1, else to a temporary folder."""
    ctx = live_server.ctx
    sid = seeding.seed_bulk(
        ctx, demo.demo_spec("mnist-optimizers-tpe"), 300, seed=11, workers=live_server.workers[:3]
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(f"{live_server.base}/dashboard/login")
        tab.fill("#token", live_server.token)
        tab.click("button[type=submit]")
        tab.wait_for_url("**/dashboard/")
        tab.goto(f"{live_server.base}/dashboard/studies/{sid}")
        tab.wait_for_function(
            "() => document.querySelectorAll('[data-chart] .js-plotly-plot .main-svg').length >= 2"
        )
        tab.locator("#diagnosis-summary").filter(has_not_text="loading").wait_for()
        tab.wait_for_timeout(600)  # let Plotly finish laying out
        update = os.environ.get("HPO_UPDATE_SCREENSHOT") == "1"
        out = SCREENSHOT if update else tmp_path / "dashboard.png"
        tab.screenshot(path=str(out))
        assert errors == []
    finally:
        context.close()
    assert _png_size(out.read_bytes()) == (1280, 900)
    committed = SCREENSHOT.read_bytes()
    assert _png_size(committed) == (1280, 900)
    assert 30_000 < len(committed) < 400_000, len(committed)
