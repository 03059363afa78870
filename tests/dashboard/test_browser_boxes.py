"""Box charts drawn from the server's statistics (``service/dashboard/boxstats.py``), in
headless Chromium against a real uvicorn server: Plotly draws the quartiles and whiskers
it is given, the points it is sent (every trial of a small study, the outliers only of a
big one, as the chart says), and a click on a point opens its trial; and the study
page's charts draw one at a time, the first one done before the next starts (so that it
shows first, issue 26's first-visit target)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from bench.synthetic import demo, seeding
from tests.dashboard.conftest import LiveServer, Watched, chart

pytestmark = pytest.mark.browser

#: Per box trace of a chart: the statistics Plotly drew with and its points' trial numbers.
DRAWN_BOXES = """(id) => {
  const gd = document.querySelector(`[data-chart=${id}] .js-plotly-plot`);
  return gd.calcdata.filter((cd) => cd[0].trace.type === "box").map((cd) => ({
    name: cd[0].trace.name, q1: cd[0].q1, median: cd[0].med, q3: cd[0].q3,
    lowerfence: cd[0].lf, upperfence: cd[0].uf,
    points: (cd[0].pts || []).map((p) => cd[0].trace.customdata[p.i[0]][p.i[1]]),
  }));
}"""


#: Wraps each Plotly's react to log [chart, started, resolved] (ms from navigation).
REACT_LOG = """window.__reacts = []; let kept;
Object.defineProperty(window, "Plotly", { configurable: true, get() { return kept; }, set(v) {
  if (v && v.react && !v.__logged) {
    const react = v.react; v.__logged = true;
    v.react = function (gd, ...rest) {
      const entry = [gd.closest("[data-chart]").dataset.chart, performance.now(), null];
      window.__reacts.push(entry);
      return Promise.resolve(react.call(this, gd, ...rest)).then((r) => {
        entry[2] = performance.now(); return r; });
    };
  }
  kept = v; } });"""


def _drawn(tab: Any, server: LiveServer, study_id: int) -> list[dict[str, Any]]:
    tab.goto(f"{server.base}/dashboard/studies/{study_id}")
    tab.wait_for_selector("[data-chart=optimizers] .plot[data-plotted]")  # react resolved
    return tab.evaluate(DRAWN_BOXES, "optimizers")  # type: ignore[no-any-return]


def _api_boxes(server: LiveServer, study_id: int) -> tuple[dict[str, dict[str, Any]], Any]:
    import httpx

    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base, headers=auth) as client:
        body = chart(client, study_id, "optimizers")
    boxes = {t["name"]: t for t in body["figure"]["data"] if t["type"] == "box"}
    return boxes, body["note"]


def _assert_drawn_as_sent(drawn: list[dict[str, Any]], sent: dict[str, dict[str, Any]]) -> None:
    assert {d["name"] for d in drawn} == set(sent)
    for box in drawn:
        api = sent[box["name"]]
        for key in ("q1", "median", "q3", "lowerfence", "upperfence"):
            assert box[key] == pytest.approx(api[key][0]), (box["name"], key)
        assert sorted(box["points"]) == sorted(api.get("customdata", [[]])[0])


def test_a_small_study_draws_every_trial_and_a_click_opens_one(
    page: Watched, live_server: LiveServer
) -> None:
    tab = page.page
    drawn = _drawn(tab, live_server, live_server.study_id)
    sent, note = _api_boxes(live_server, live_server.study_id)
    _assert_drawn_as_sent(drawn, sent)
    assert note is None and sum(len(b["points"]) for b in drawn) >= 10
    point = tab.locator("[data-chart=optimizers] .trace.boxes path.point").first
    box = point.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    tab.mouse.move(x, y)
    tab.wait_for_selector("[data-chart=optimizers] .hoverlayer .hovertext")
    assert "trial #" in tab.locator("[data-chart=optimizers] .hoverlayer").text_content()
    tab.mouse.click(x, y)
    tab.wait_for_url(re.compile(r".*/trials/\d+$"))
    number = int(tab.url.rsplit("/", 1)[1])
    assert any(number in b["points"] for b in drawn)
    assert page.errors == [] and page.dialogs == []


def test_a_big_study_draws_the_outliers_only_and_says_so(
    page: Watched, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.dashboard import charts_params

    monkeypatch.setattr(charts_params, "BOX_POINTS_LIMIT", 10)  # 200 trials count as big
    sid = seeding.seed_bulk(live_server.ctx, demo.demo_spec("many-boxes"), 200, seed=8)
    tab = page.page
    drawn = _drawn(tab, live_server, sid)
    sent, note = _api_boxes(live_server, sid)
    _assert_drawn_as_sent(drawn, sent)
    assert sum(len(b["points"]) for b in drawn) < 100
    shown = tab.locator("[data-chart=optimizers] .note").inner_text()
    assert shown == note and "points drawn for outliers only" in shown
    assert page.errors == [] and page.dialogs == []


def test_study_charts_draw_in_turn_the_first_one_first(
    page: Watched, live_server: LiveServer
) -> None:
    tab = page.page
    tab.add_init_script(REACT_LOG)

    def late(route: Any) -> None:  # every prefetched figure is there when plotly.js runs
        time.sleep(1.5)
        route.continue_()

    tab.route("**/plotly-cartesian.min.js*", late)
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.study_id}")
    tab.wait_for_function("() => window.__reacts && window.__reacts.length >= 3")
    tab.wait_for_function("() => window.__reacts.every((r) => r[2] !== null)")
    reacts = tab.evaluate("() => window.__reacts")
    first = tab.evaluate("() => performance.getEntriesByName('hpo:first-chart')[0].startTime")
    assert reacts[0][0] == "optimizers" and first == pytest.approx(reacts[0][2], abs=5)
    for before, after in zip(reacts, reacts[1:], strict=False):
        assert after[1] >= before[2], (before, after)  # started once the one before was done
    assert page.errors == [] and page.dialogs == []
