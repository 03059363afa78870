"""Dashboard at scale: a 10,000-trial study, chart endpoint latency and first chart in Chromium.

    .venv/bin/python bench/dashboard.py                 # SQLite in a temporary folder
    .venv/bin/python bench/dashboard.py --database-url postgresql+psycopg://...  # empty DB
    .venv/bin/python bench/dashboard.py --skip-baseline --runs 3

Measures, over real HTTP against a uvicorn server:

1. server: ``/version`` on a fresh server (loads the study's trial table), then
   every chart endpoint once (figure built), once more after a new trial finished
   (incremental refresh + rebuild), and cached; medians over ``--runs`` fresh servers;
2. browser: time from navigation start to the first drawn chart
   (``performance.mark('hpo:first-chart')`` in app.js) in headless Chromium, with
   a fresh server + empty browser cache, a warm server + empty browser cache, and
   a warm server + warm browser cache;
3. baseline: the same Optuna charts the naive way, ``optuna.load_study`` over the
   database + ``optuna.visualization.plot_*`` + ``to_json`` (each in a subprocess
   with a time limit);
4. chart paths: Optuna's plot functions against the dashboard's charts drawn from
   the frame, at ``--chart-sizes`` trials (``bench/dashboard_charts.py``).

Writes a Markdown report (default ``bench/results/dashboard.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import optuna  # noqa: E402
import plotly  # noqa: E402

from bench import dashboard_charts  # noqa: E402
from bench.synthetic import demo, seeding  # noqa: E402
from service.core.auth import create_token_without_commit  # noqa: E402
from service.core.config import Settings  # noqa: E402
from service.dashboard.charts import STUDY_CHARTS  # noqa: E402
from tests.dashboard.conftest import BROWSER_ARGS, start_server  # noqa: E402

BASELINE: dict[str, Any] = {
    "history": lambda ov, study: ov.plot_optimization_history(study),
    "importance": lambda ov, study: ov.plot_param_importances(study),
    "contour": lambda ov, study: ov.plot_contour(study, params=["lr_adaptive", "weight_decay"]),
    "parallel": lambda ov, study: ov.plot_parallel_coordinate(study),
    "slice": lambda ov, study: ov.plot_slice(study),
}
STUDY = "bench-10k"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def make_settings(url: str, tmp: Path) -> Settings:
    return Settings(database_url=url, auth=True, token_file=tmp / "tokens.json",
                    reaper_interval_s=3600.0)  # fmt: skip


def seed(url: str, tmp: Path, trials: int) -> tuple[int, str, float]:
    """Create the big study; returns (study id, viewer token, seconds)."""
    from service.app import create_app

    app = create_app(make_settings(url, tmp))
    ctx = app.state.ctx
    started = time.perf_counter()
    workers = seeding.register_workers(ctx, 16)
    study_id = seeding.seed_bulk(ctx, demo.demo_spec(STUDY), trials, workers=workers)
    elapsed = time.perf_counter() - started
    with ctx.db.session() as session:
        token, _ = create_token_without_commit(session, "viewer", "bench")
    ctx.close()
    return study_id, token, elapsed


class Server:
    """A fresh app (empty dashboard caches) served by uvicorn in a thread."""

    def __init__(self, url: str, tmp: Path, port: int | None = None) -> None:
        from service.app import create_app

        self.app = create_app(make_settings(url, tmp))
        self.server, self.thread, self.base = start_server(self.app, port)
        self.port = int(self.base.rsplit(":", 1)[1])
        for thread in threading.enumerate():  # let the library warm-up finish first
            if thread.name == "dashboard-prewarm":
                thread.join(timeout=60)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.ctx.close()


def timed_get(client: httpx.Client, path: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed * 1000, response.json()


def ms(client: httpx.Client, path: str) -> float:
    return timed_get(client, path)[0]


def finish_one_trial(url: str) -> None:
    """A worker finishing a trial: changes the study's version."""
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    study.tell(trial, 0.97)
    storage.engine.dispose()


def until_fresh(client: httpx.Client, path: str, version: str) -> tuple[float, float]:
    """(ms of the first answer, ms until an answer carries ``version``)."""
    started = time.perf_counter()
    first, body = timed_get(client, path)
    while body["version"].split("|")[0] != version:
        time.sleep(0.01)
        body = timed_get(client, path)[1]
    return first, (time.perf_counter() - started) * 1000


TABLE = "loading the trial table (at start-up, in the background)"
VERSION = "version (polled by every open page)"
FRESH = "until the new figure is served"


def server_round(url: str, tmp: Path, study_id: int, token: str) -> dict[str, dict[str, float]]:
    """One fresh server: ms per request, first build / after a change / cached."""
    server = Server(url, tmp)
    dash = server.app.state.dashboard
    api = f"/api/v1/dashboard/studies/{study_id}"
    out: dict[str, dict[str, float]] = {"cold": {}, "changed": {}, FRESH: {}, "cached": {}}
    try:
        dash.forget(study_id)
        started = time.perf_counter()
        dash.frame(study_id)
        out["cold"][TABLE] = (time.perf_counter() - started) * 1000
        with httpx.Client(base_url=server.base, timeout=600,
                          headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
            out["cold"][VERSION] = ms(client, f"{api}/version")
            for name in STUDY_CHARTS:
                out["cold"][name] = ms(client, f"{api}/charts/{name}")
            finish_one_trial(url)
            out["changed"][VERSION], body = timed_get(client, f"{api}/version")
            for name in STUDY_CHARTS:
                first, fresh = until_fresh(client, f"{api}/charts/{name}", body["trials"])
                out["changed"][name], out[FRESH][name] = first, fresh
            for name in STUDY_CHARTS:
                out["cached"][name] = median([ms(client, f"{api}/charts/{name}")
                                              for _ in range(5)])  # fmt: skip
            out["cached"][VERSION] = ms(client, f"{api}/version")
            out["cached"]["trials table page (sorted by value)"] = ms(
                client, f"{api}/trials?limit=50&sort=value&order=desc"
            )
            out["cached"]["learning-curve delta"] = ms(client, f"{api}/curves?since=0")
    finally:
        server.close()
    return out


def first_chart_ms(page: Any, base: str, study_id: int) -> float:
    page.goto("about:blank")
    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.wait_for_function(
        "() => performance.getEntriesByName('hpo:first-chart').length > 0", timeout=120_000
    )
    return float(page.evaluate(
        "() => performance.getEntriesByName('hpo:first-chart')[0].startTime"
    ))  # fmt: skip


def login(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")


CASES = (
    "first visit ever: fresh server, empty browser profile",
    "second visit: warm server",
    "returning visit: warm server, browser cache + V8 code cache warm (median of 3)",
    "returning visit to a freshly started server (trial table not loaded yet)",
)


def browser_round(p: Any, url: str, tmp: Path, study_id: int, token: str) -> list[float]:
    """One browser profile (a persistent one, as a real browser keeps its cache)."""
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp))
    context = p.chromium.launch_persistent_context(
        str(profile), executable_path=shutil.which("chromium"), args=BROWSER_ARGS,
        viewport={"width": 1400, "height": 1000},
    )  # fmt: skip
    page = context.new_page()
    try:
        server = Server(url, tmp)
        try:
            login(page, server.base, token)
            first = first_chart_ms(page, server.base, study_id)
            second = first_chart_ms(page, server.base, study_id)
            warm = median([first_chart_ms(page, server.base, study_id) for _ in range(3)])
        finally:
            server.close()
        server = Server(url, tmp, server.port)  # same origin and database, empty caches
        try:
            restarted = first_chart_ms(page, server.base, study_id)
        finally:
            server.close()
    finally:
        context.close()
    return [first, second, warm, restarted]


def browser_rounds(url: str, tmp: Path, study_id: int, token: str, runs: int) -> dict[str, list]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {case: [] for case in CASES}
    with sync_playwright() as p:
        for _ in range(runs):
            for case, value in zip(CASES, browser_round(p, url, tmp, study_id, token), strict=True):
                out[case].append(value)
    return out


def baseline_one(url: str, chart: str) -> None:
    """Child process: the naive way, printing JSON timings."""
    import optuna.visualization as ov

    started = time.perf_counter()
    study = optuna.load_study(study_name=STUDY, storage=url)
    study.trials  # noqa: B018 - what every optuna.visualization function does first
    loaded = time.perf_counter() - started
    fig = BASELINE[chart](ov, study)
    size = len(fig.to_json())
    total = time.perf_counter() - started
    print(json.dumps({"load_s": loaded, "total_s": total, "json_mb": size / 1e6}))


def baseline(url: str, limit_s: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for chart in BASELINE:
        cmd = [sys.executable, __file__, "--baseline-one", chart, "--database-url", url]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, check=True)
            out[chart] = json.loads(done.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            out[chart] = {"timeout_s": limit_s}
        except subprocess.CalledProcessError as exc:
            out[chart] = {"error": (exc.stderr or "").strip().splitlines()[-1:]}
        print(f"baseline {chart}: {out[chart]}", flush=True)
    return out


def environment(url: str) -> dict[str, str]:
    chromium = shutil.which("chromium")
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout
    return {
        "database": url.split(":")[0].split("+")[0],
        "cpu cores": str(os.cpu_count()),
        "load average at start (1 min)": f"{os.getloadavg()[0]:.1f}",
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "plotly": plotly.__version__,
        "chromium": version.strip() or "?",
    }


def _cell(values: list[float]) -> str:
    return f"{median(values):,.0f}" if values else "—"


def _server_table(rounds: list[dict[str, dict[str, float]]]) -> list[str]:
    rows = [
        "| request | first request (figure built) | after a trial finished: answer "
        f"| after a trial finished: {FRESH} | cached |",
        "|---|--:|--:|--:|--:|",
    ]
    names = list(rounds[0]["cold"]) + [k for k in rounds[0]["cached"] if k not in rounds[0]["cold"]]
    for name in names:
        cells = [_cell([r[kind][name] for r in rounds if name in r[kind]])
                 for kind in ("cold", "changed", FRESH, "cached")]  # fmt: skip
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _baseline_table(data: dict[str, Any]) -> list[str]:
    rows = [
        "| chart | naive: load_study + trials (s) | naive: total (s) | naive figure JSON (MB) "
        "| dashboard, fresh (ms) | dashboard, cached (ms) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for chart, result in data["baseline"].items():
        fresh = _cell([r["cold"][chart] for r in data["server"]])
        cached = _cell([r["cached"][chart] for r in data["server"]])
        if "total_s" in result:
            naive = (f"{result['load_s']:.1f} | {result['total_s']:.1f} | "
                     f"{result['json_mb']:.1f}")  # fmt: skip
        else:
            naive = f"— | {result.get('timeout_s', 'error')} (limit) | —"
        rows.append(f"| {chart} | {naive} | {fresh} | {cached} |")
    return rows


def report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    lines = [
        f"# Dashboard with a {args.trials:,}-trial study",
        "",
        f"`.venv/bin/python bench/dashboard.py --runs {args.runs}` on "
        f"{time.strftime('%Y-%m-%d')}; {args.runs} fresh server(s) per measurement.",
        "",
        "| environment | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in data["env"].items()],
        f"| seeding {args.trials:,} trials (bulk insert) | {data['seed_s']:.1f} s |",
        "",
        "## Server: answer time per request (ms, median over fresh servers)",
        "",
        "A fresh server has empty caches: `version` reads the trial table of the study "
        "(one joined query), then each chart is built once and cached under the study's "
        'version. "After a trial finished": the version changed, only new/unfinished '
        "trials are read again and every chart is rebuilt.",
        "",
        *_server_table(data["server"]),
    ]
    if "browser" in data:
        lines += ["", "## Browser: first chart drawn (ms from navigation start)", "",
                  "| case | median | max |", "|---|--:|--:|"]  # fmt: skip
        lines += [f"| {case} | {median(v):,.0f} | {max(v):,.0f} |"
                  for case, v in data["browser"].items()]  # fmt: skip
    if "chart_paths" in data:
        lines += [
            "",
            "## Chart paths: Optuna's plot functions vs drawn from the frame",
            "",
            "The same trials (a bulk-inserted study per size), ms per figure + `to_json()`, "
            "one process (`bench/dashboard_charts.py`). The dashboard draws each of these "
            "charts from the frame only.",
            "",
            *dashboard_charts.table(data["chart_paths"]),
        ]
    if "baseline" in data:
        lines += [
            "",
            "## Baseline: the same Optuna charts the naive way",
            "",
            "`optuna.load_study(...)` over the database, `optuna.visualization.plot_*`, "
            "`fig.to_json()`, each in a fresh process.",
            "",
            *_baseline_table(data),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh servers per measurement")
    parser.add_argument("--database-url", default=None, help="an EMPTY database (default: SQLite)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--baseline-limit-s", type=float, default=300.0)
    parser.add_argument("--chart-sizes", default="200,10000",
                        help="trial counts for the chart-path comparison ('' to skip)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.md")
    parser.add_argument("--baseline-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_one:
        baseline_one(args.database_url, args.baseline_one)
        return
    tmp = Path(tempfile.mkdtemp(prefix="hpo-dashboard-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    data: dict[str, Any] = {"env": environment(url)}
    study_id, token, data["seed_s"] = seed(url, tmp, args.trials)
    print(f"seeded {args.trials} trials in {data['seed_s']:.1f} s", flush=True)
    data["server"] = [server_round(url, tmp, study_id, token) for _ in range(args.runs)]
    print(json.dumps(data["server"], indent=1), flush=True)
    if not args.skip_browser:
        data["browser"] = browser_rounds(url, tmp, study_id, token, args.runs)
        print(json.dumps(data["browser"], indent=1), flush=True)
    if not args.skip_baseline:
        data["baseline"] = baseline(url, args.baseline_limit_s)
    if args.chart_sizes:
        sizes = [int(n) for n in args.chart_sizes.split(",")]
        data["chart_paths"] = dashboard_charts.measure(sizes)
    data["env"]["load average at end (1 min)"] = f"{os.getloadavg()[0]:.1f}"
    text = report(args, data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
