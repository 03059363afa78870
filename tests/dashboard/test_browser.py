"""The dashboard in headless Chromium, against a real uvicorn server (auth on).

The ``page`` fixture signs in through the login form; every test checks that
the page logged no console error and opened no dialog.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pytest

from bench.synthetic import demo
from service.storage.models import TrialMetric
from tests.dashboard.conftest import LiveServer, Watched

pytestmark = pytest.mark.browser

PLOTTED = ".js-plotly-plot .main-svg"
#: Records every CSP violation the page sees (Chromium also logs them as console errors).
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""
DRAWN = "name => !!document.querySelector(`[data-chart=${name}] .js-plotly-plot .main-svg`)"
#: The trace types every drawn chart of the page holds.
TYPES = """sel => Array.from(new Set(Array.from(document.querySelectorAll(`${sel} .js-plotly-plot`))
  .flatMap((gd) => gd._fullData.map((t) => t.type))))"""


def _scroll_all_charts(watched: Watched) -> None:
    """Scroll down so that every lazily loaded chart comes into view."""
    for _ in range(12):
        watched.page.mouse.wheel(0, 900)
        watched.page.wait_for_timeout(150)


def _wait_until_held(tab: Any, held: list, failure: str, seconds: float = 20) -> None:
    """Let the page run until a route handler has held back one of its requests."""
    deadline = time.monotonic() + seconds
    while not held and time.monotonic() < deadline:
        tab.wait_for_timeout(50)
    assert held, failure


def _requests(tab: Any) -> list[str]:
    seen: list[str] = []
    tab.on("request", lambda r: seen.append(r.url))
    return seen


def _fetched(seen: list[str], part: str) -> bool:
    return any(part in url for url in seen)


def _assert_clean(watched: Watched) -> None:
    if watched.page.evaluate("() => window.__csp !== undefined"):
        assert watched.page.evaluate("() => window.__csp") == []
    assert watched.errors == [], watched.errors
    assert watched.dialogs == [], watched.dialogs


def test_sign_in_keeps_the_token_out_of_reach_of_scripts(page: Watched, live_server) -> None:
    cookies = page.page.context.cookies()
    token = next(c for c in cookies if c["name"] == "hpo_token")
    assert token["httpOnly"] is True and token["sameSite"] == "Strict"
    assert "hpo_token" not in page.page.evaluate("() => document.cookie")
    assert live_server.token not in page.page.content()
    assert live_server.token not in page.page.url
    _assert_clean(page)


def test_studies_page_lists_studies_and_opens_one(
    page: Watched, live_server: LiveServer, tmp_path: Path
) -> None:
    tab = page.page
    tab.wait_for_selector("#studies-body tr")
    assert tab.locator("#studies-body tr").count() == 4
    row = tab.locator("#studies-body tr", has_text="mnist-optimizers")
    assert "tpe" in row.inner_text()
    tab.screenshot(path=str(tmp_path / "studies.png"))
    row.locator("a", has_text="mnist-optimizers").click()
    tab.wait_for_url(f"**/dashboard/studies/{live_server.study_id}")
    tab.wait_for_selector(PLOTTED)
    _assert_clean(page)


def test_study_page_renders_every_chart_lazily_and_links_to_trials(
    page: Watched, live_server: LiveServer, tmp_path: Path
) -> None:
    tab = page.page
    tab.add_init_script(CSP_WATCH)
    seen = _requests(tab)
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.study_id}")
    tab.wait_for_function(DRAWN, arg="optimizers")
    tab.wait_for_timeout(300)  # what the page would fetch eagerly has gone out by now
    # Lazy loading: the charts well below the fold (and its margin), and the strict
    # plotly.js build that only parallel coordinates need, are not fetched before scroll.
    top = tab.evaluate("() => document.querySelector('[data-chart=parallel]').offsetTop")
    assert top > 2 * tab.viewport_size["height"]
    assert _fetched(seen, "/static/plotly-cartesian.min.js?v=")
    assert not _fetched(seen, "/static/plotly.min.js"), "the strict build came before scroll"
    for below in ("parallel", "slice"):
        assert not _fetched(seen, f"/charts/{below}"), f"{below} fetched before scroll"
    _scroll_all_charts(page)
    tab.wait_for_function(
        "() => Array.from(document.querySelectorAll('[data-chart]'))"
        ".every((s) => s.querySelector('.js-plotly-plot .main-svg'))"
    )
    tab.wait_for_selector('[data-chart="parallel"] canvas')
    assert tab.locator("[data-chart] .plot .empty").count() == 0
    # WebGL charts draw under the page's CSP (Plotly's regular bundle needs
    # 'unsafe-eval' and shows "WebGL is not supported" instead).
    assert "WebGL is not supported" not in tab.locator("main").inner_text()
    parallel = tab.locator('[data-chart="parallel"]')
    assert parallel.locator("canvas").count() >= 1
    assert parallel.locator("g.axis").count() >= 3  # one per dimension, drawn by plotly
    # Every trace type drew (the 2-D ones with the cartesian bundle, parcoords with the
    # strict build), no CSP violation (checked by _assert_clean).
    assert {"scatter", "box", "contour", "parcoords"} <= set(tab.evaluate(TYPES, "[data-chart]"))
    assert _fetched(seen, "/charts/parallel") and _fetched(seen, "/static/plotly.min.js?v=")
    assert tab.evaluate(TYPES, "[data-chart=parallel]") == ["parcoords"]
    tab.wait_for_selector("#trials-body tr td a")
    tab.screenshot(path=str(tmp_path / "study.png"), full_page=True)
    link = tab.locator("#trials-body tr td a").first
    number = link.inner_text().lstrip("#")
    link.click()
    tab.wait_for_url(f"**/trials/{number}")
    assert tab.locator("h1").inner_text().startswith(f"Trial {number}")
    tab.wait_for_selector("[data-trial-chart] .main-svg")
    tab.screenshot(path=str(tmp_path / "trial.png"), full_page=True)
    _assert_clean(page)
    ids = f"{live_server.study_id},{live_server.compression_study_id}"
    tab.goto(f"{live_server.base}/dashboard/compare?ids={ids}")
    tab.wait_for_selector("[data-compare=distributions] .main-svg")
    assert "violin" in tab.evaluate(TYPES, "[data-compare]")
    _assert_clean(page)


def test_trials_table_sorts_and_filters_in_the_browser(page: Watched, live_server) -> None:
    tab = page.page
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.study_id}")
    tab.wait_for_selector("#trials-body tr td a")
    tab.select_option("#trial-filters select[name=state]", "COMPLETE")
    tab.wait_for_function(
        "() => Array.from(document.querySelectorAll('#trials-body .badge'))"
        ".every(b => b.textContent === 'complete')"
    )
    tab.click("#trials-head button:text('value')")
    tab.wait_for_selector("#trials-head th[aria-sort=ascending]")
    _assert_clean(page)


def test_trials_table_shows_the_latest_filter_when_answers_cross(
    page: Watched, live_server: LiveServer
) -> None:
    """The page's first (unfiltered) answer comes back after the filtered one: the
    table keeps the filtered rows (it drew the late answer over them once)."""
    tab = page.page
    held: list = []

    def hold_unfiltered(route) -> None:  # playwright's Route
        if "state=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    tab.route("**/studies/*/trials?*", hold_unfiltered)
    polls: list = []  # held unanswered: no poll may redraw the table and hide the race
    tab.route("**/studies/*/version", lambda route: polls.append(route))
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.study_id}")
    _wait_until_held(tab, held, "the page never asked for its trials")
    tab.select_option("#trial-filters select[name=state]", "FAIL")
    tab.wait_for_selector("#trials-body .badge")
    late = [(route, route.fetch()) for route in held]
    states = {row["state"] for _, answer in late for row in answer.json()["rows"]}
    assert states - {"FAIL"}, states  # the late answer would show other states
    for route, answer in late:
        route.fulfill(response=answer)
    for route, _ in late:  # the page has read each late answer...
        tab.wait_for_function(
            "url => performance.getEntriesByType('resource').some(e => e.name === url)",
            arg=route.request.url,
        )
    tab.wait_for_timeout(300)  # ...and had the time to (wrongly) draw it
    badges = tab.locator("#trials-body .badge").all_text_contents()
    assert badges and set(badges) == {"fail"}, badges
    assert tab.locator("#trials-body tr td a").count() == len(badges)
    _assert_clean(page)


def test_a_study_named_script_renders_as_text(
    page: Watched, live_server: LiveServer, tmp_path: Path
) -> None:
    tab = page.page
    name = "<script>alert(1)</script>"
    tab.wait_for_selector("#studies-body tr")
    assert tab.locator("#studies-body a", has_text=name).count() == 1
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.xss_study_id}")
    assert tab.locator("#study-name").inner_text() == name
    tab.wait_for_selector(PLOTTED)
    # the optimizer named <img src=x onerror=alert(2)> is a tick label, as text
    labels = tab.locator("[data-chart=optimizers] .xtick text").all_text_contents()
    assert "<img src=x onerror=alert(2)>" in labels
    assert tab.locator("img[src=x]").count() == 0
    assert tab.evaluate("() => Array.from(document.scripts).every(s => s.src)")
    tab.screenshot(path=str(tmp_path / "escaped.png"))
    tab.wait_for_timeout(500)
    _assert_clean(page)


def test_empty_study_shows_messages(page: Watched, live_server: LiveServer) -> None:
    tab = page.page
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.empty_study_id}")
    tab.wait_for_selector("[data-chart=optimizers] .plot .empty")
    assert "No trials yet" in tab.locator("[data-chart=optimizers] .plot").inner_text()
    _assert_clean(page)


def test_live_updates_without_reload(page: Watched, live_server: LiveServer) -> None:
    """A trial reporting epochs shows up in the learning curves and the table, no reload."""
    tab = page.page
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.study_id}")
    tab.wait_for_selector("[data-chart=curves] .main-svg")
    tab.evaluate("() => { window.__sameDocument = true; }")
    study = optuna.load_study(study_name="mnist-optimizers", storage=live_server.ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    with live_server.ctx.db.session() as session:
        for epoch in (1, 2, 3):
            session.add(
                TrialMetric(
                    study_id=live_server.study_id,
                    optuna_trial_id=trial._trial_id,
                    attempt=1,
                    step=epoch,
                    value=0.9,
                    metrics={"val_accuracy": 0.9 + epoch / 1000},
                    created_at=datetime.now(UTC),
                )
            )
    has_trial = (
        "n => document.querySelector('[data-chart=curves] .js-plotly-plot').data"
        ".some(t => Array.from(t.customdata || []).includes(n))"
    )
    tab.wait_for_function(has_trial, arg=trial.number, timeout=20_000)
    tab.wait_for_selector(f"#trials-body a:text('#{trial.number}')", timeout=20_000)
    started = time.monotonic()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    pruned_marked = (
        "n => Array.from(document.querySelector('[data-chart=curves] .js-plotly-plot').data"
        ".find(t => t.meta && t.meta.mark === 'PRUNED').customdata).includes(n)"
    )
    tab.wait_for_function(pruned_marked, arg=trial.number, timeout=20_000)
    assert time.monotonic() - started < 20
    assert tab.evaluate("() => window.__sameDocument") is True  # no reload happened
    _assert_clean(page)


def test_a_change_before_the_first_poll_still_reaches_the_table(
    page: Watched, live_server: LiveServer
) -> None:
    """The page's first version poll has nothing to compare with: a trial that appeared
    between the first table load and that poll must still show (it once did not)."""
    tab = page.page
    held: list = []
    released: list[bool] = []

    def hold(route) -> None:  # type: ignore[no-untyped-def] - polls wait until released
        if released:
            route.continue_()
        else:
            held.append(route)

    tab.route("**/version", hold)
    tab.goto(f"{live_server.base}/dashboard/studies/{live_server.study_id}")
    tab.wait_for_selector("#trials-body a")
    study = optuna.load_study(study_name="mnist-optimizers", storage=live_server.ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    assert tab.locator(f"#trials-body a:text('#{trial.number}')").count() == 0
    _wait_until_held(tab, held, "the page did not poll")  # its first poll comes soon
    released.append(True)
    for route in held:
        route.continue_()
    tab.wait_for_selector(f"#trials-body a:text('#{trial.number}')", timeout=20_000)
    study.tell(trial, 0.5)
    _assert_clean(page)


def test_workers_page(page: Watched, live_server: LiveServer, tmp_path: Path) -> None:
    tab = page.page
    tab.goto(f"{live_server.base}/dashboard/workers")
    tab.wait_for_selector("#workers-body tr")
    assert tab.locator("#workers-body tr").count() == 4
    text = tab.locator("#workers-body").inner_text()
    assert "H100" in text and "mnist-optimizers #" in text
    tab.screenshot(path=str(tmp_path / "workers.png"))
    _assert_clean(page)
