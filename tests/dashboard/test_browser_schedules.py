"""The schedule page in headless Chromium against a real uvicorn server (auth on): a PBT
study's charts and lineage table, a promotion-ASHA study's rung chart and tables, drawn
without a console error under the dashboard's CSP. The studies are made through the
trial protocol over HTTP (no training)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import start_server
from tests.dashboard.schedule_data import Made, asha_study, pbt_study

pytestmark = pytest.mark.browser

DRAWN = (
    "name => !!document.querySelector(`[data-schedule-chart=${name}] .js-plotly-plot .main-svg`)"
)


@pytest.fixture(scope="module")
def schedule_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, Made, Made]]:
    from service.app import create_app
    from tests.conftest import make_settings, mint_tokens

    tmp: Path = tmp_path_factory.mktemp("schedules")
    app = create_app(make_settings(f"sqlite:///{tmp / 'hpo.db'}", tmp))
    ctx = app.state.ctx
    server, thread, base = start_server(app)
    tokens = mint_tokens(ctx)
    with httpx.Client(base_url=base, timeout=30) as client:
        pbt = pbt_study(client, tokens, ctx)
        asha = asha_study(client, tokens)
    yield base, tokens.viewer, pbt, asha
    server.should_exit = True
    thread.join(timeout=10)
    ctx.close()


def test_schedule_pages_draw_their_charts_and_tables_without_errors(
    browser: Any, schedule_server: tuple[str, str, Made, Made]
) -> None:
    base, token, pbt, asha = schedule_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    try:
        tab.goto(f"{base}/dashboard/login")
        tab.fill("#token", token)
        tab.click("button[type=submit]")
        tab.wait_for_url("**/dashboard/")

        tab.goto(f"{base}/dashboard/studies/{pbt.study_id}")
        tab.click("#schedule-link")  # the study page links its schedule page
        tab.wait_for_url(f"**/dashboard/studies/{pbt.study_id}/schedule")
        for name in ("pbt-members", "pbt-schedule"):
            tab.wait_for_function(DRAWN, arg=name)
        tab.wait_for_selector("#lineage-body tr.best-lineage")
        rows = tab.locator("#lineage-body tr").count()
        best = tab.locator("#lineage-body tr.best-lineage").count()
        assert (rows, best) == (6, 3)
        dashes = tab.evaluate(
            "() => document.querySelector('[data-schedule-chart=pbt-members] .js-plotly-plot')"
            "._fullData.filter(t => t.line && t.line.dash === 'dash').length"
        )
        assert dashes == 2  # one exploit connector per member that copied

        tab.goto(f"{base}/dashboard/studies/{asha.study_id}/schedule")
        tab.wait_for_function(DRAWN, arg="asha-rungs")
        tab.wait_for_selector("#promotions-body tr td a")
        assert tab.locator("#rungs-body tr").count() == 2
        assert errors == [], errors
    finally:
        context.close()
