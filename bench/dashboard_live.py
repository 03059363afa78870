"""Browser and memory measurements of ``bench/dashboard.py`` (issue 26 targets).

- ``browser_rounds``: per fresh Chromium profile (a persistent one, as a real browser
  keeps its cache), the first chart drawn after navigation on the first visit, a second
  visit, returning visits, and after a server restart; then a live update: a trial
  finishes (Optuna ``tell`` on the database) and the time until the open page shows it
  (the counts) and until its first chart is redrawn with the new trial;
- ``rss``: the server process's resident memory (psutil) after it started and after it
  answered every page and chart of both seeded studies (a child process, so that the
  seeding and the browser do not count).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

CASES = (
    "first visit: empty browser profile, server up (its start-up warming done)",
    "second visit: warm server",
    "returning visit: warm server, browser cache + V8 code cache warm (median of 3)",
    "returning visit to a server just started (its warming not waited for)",
)
LIVE_COUNTS = "live update: trial finished -> the page's counts show it"
LIVE_CHART = "live update: trial finished -> the first chart redrawn with it"
WARMING = "the server's start-up warming, waited for before the first visit (ms)"
FIRST_CHART = "performance.getEntriesByName('hpo:first-chart')"


def first_chart_ms(page: Any, base: str, study_id: int) -> float:
    """ms from navigation start to the first chart drawn (app.js marks it)."""
    page.goto("about:blank")
    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.wait_for_function(f"() => {FIRST_CHART}.length > 0", timeout=180_000)
    return float(page.evaluate(f"() => {FIRST_CHART}[0].startTime"))


#: Where a first visit's time goes: ms from navigation start (resource timing + marks).
TRACE_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const end = (part) => {
    const r = res.find((e) => e.name.includes(part));
    return r ? r.responseEnd : null;
  };
  const start = (part) => {
    const r = res.find((e) => e.name.includes(part));
    return r ? r.startTime : null;
  };
  const mark = (n) => {
    const m = performance.getEntriesByName(n)[0];
    return m ? m.startTime : null;
  };
  return {
    "HTML received": nav.responseEnd,
    "DOMContentLoaded": nav.domContentLoadedEventStart,
    "app.js received": end("app."),
    "first chart's JSON requested": start("/charts/"),
    "first chart's JSON received": end("/charts/"),
    "plotly.js (cartesian) requested": start("plotly-cartesian"),
    "plotly.js (cartesian) received": end("plotly-cartesian"),
    "plotly.js (cartesian) ran": mark("hpo:plotly-cartesian"),
    "first chart drawn": mark("hpo:first-chart"),
  };
}"""
TRACE = "first visit, trace: "


def trace(page: Any) -> dict[str, float]:
    """The first visit's trace (``TRACE_JS``), keys prefixed with ``TRACE``."""
    got = page.evaluate(TRACE_JS)
    return {TRACE + k: float(v) for k, v in got.items() if v is not None}


def login(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")


def live_update_ms(page: Any, finish: Callable[[], None]) -> tuple[float, float]:
    """(ms until the counts show a finished trial, ms until the first chart shows it),
    on the study page already open and drawn; ``finish`` ends one trial."""
    page.wait_for_function("() => document.querySelector('[data-chart]').dataset.version")
    before = page.evaluate(
        "() => [document.querySelector('[data-count=complete]').textContent,"
        " document.querySelector('[data-chart]').dataset.version]"
    )
    finish()
    started = time.perf_counter()
    page.wait_for_function(
        "c => document.querySelector('[data-count=complete]').textContent !== c",
        arg=before[0],
        timeout=120_000,
        polling=10,
    )
    counts = (time.perf_counter() - started) * 1000
    page.wait_for_function(
        "v => document.querySelector('[data-chart]').dataset.version !== v",
        arg=before[1],
        timeout=120_000,
        polling=10,
    )
    return counts, (time.perf_counter() - started) * 1000


def browser_round(
    p: Any,
    server_factory: Any,
    study_id: int,
    token: str,
    tmp: Path,
    args_browser: list[str],
    finish: Callable[[], None],
) -> dict[str, float]:
    """One fresh browser profile: the four visits of ``CASES`` and a live update."""
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp))
    context = p.chromium.launch_persistent_context(
        str(profile),
        executable_path=shutil.which("chromium"),
        args=args_browser,
        viewport={"width": 1400, "height": 1000},
    )
    page = context.new_page()
    out: dict[str, float] = {}
    try:
        server = server_factory(None)
        out[WARMING] = (server.warm_s or 0.0) * 1000
        try:
            login(page, server.base, token)
            out[CASES[0]] = first_chart_ms(page, server.base, study_id)
            out |= trace(page)
            out[CASES[1]] = first_chart_ms(page, server.base, study_id)
            warm = sorted(first_chart_ms(page, server.base, study_id) for _ in range(3))
            out[CASES[2]] = warm[1]
            out[LIVE_COUNTS], out[LIVE_CHART] = live_update_ms(page, finish)
        finally:
            server.close()
        server = server_factory(server.port, False)  # same origin and database, cold caches
        try:
            out[CASES[3]] = first_chart_ms(page, server.base, study_id)
        finally:
            server.close()
    finally:
        context.close()
    return out


def rss_child(server_factory: Any, token: str, study_ids: list[int]) -> dict[str, float]:
    """In the child: RSS (MB) of this process (the server) at start and after every page,
    chart, table page and diagnosis of the studies (the diagnosis waited for)."""
    import psutil

    from service.dashboard.charts import COMPARE_CHARTS, STUDY_CHARTS

    me = psutil.Process()
    server = server_factory(None)
    out = {"after start (MB)": me.memory_info().rss / 1e6}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=server.base, timeout=600, headers=headers) as client:
            for path in ("/dashboard/", "/dashboard/workers", "/api/v1/dashboard/studies"):
                client.get(path).raise_for_status()
            for sid in study_ids:
                api = f"/api/v1/dashboard/studies/{sid}"
                for path in (
                    f"/dashboard/studies/{sid}",
                    f"{api}/version",
                    f"{api}/trials?limit=100&sort=value",
                    f"{api}/curves?since=0",
                    f"/dashboard/studies/{sid}/trials/7",
                ):
                    client.get(path).raise_for_status()
                for name in STUDY_CHARTS:
                    client.get(f"{api}/charts/{name}").raise_for_status()
                deadline = time.monotonic() + 300
                while client.get(f"{api}/diagnosis").json().get("pending"):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            ids = ",".join(str(s) for s in study_ids)
            for name in COMPARE_CHARTS:
                client.get(f"/api/v1/dashboard/compare/{name}?ids={ids}").raise_for_status()
            out["after every page and chart (MB)"] = me.memory_info().rss / 1e6
    finally:
        server.close()
    out["peak (MB)"] = _peak_mb()
    return out


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux


def rss(script: str, url: str, tmp: Path, token: str, study_ids: list[int]) -> dict[str, Any]:
    """Run ``rss_child`` in a fresh process (``script --rss-one``)."""
    cmd = [
        sys.executable,
        script,
        "--rss-one",
        json.dumps({"url": url, "tmp": str(tmp), "token": token, "studies": study_ids}),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
    except subprocess.CalledProcessError as exc:
        return {"error": (exc.stderr or "").strip().splitlines()[-3:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
