"""Dashboard at scale: a 10,000- or 100,000-trial study, chart endpoint latency and first
chart in Chromium.

    .venv/bin/python bench/dashboard.py                 # SQLite in a temporary folder
    .venv/bin/python bench/dashboard.py --database-url postgresql+psycopg://...  # empty DB
    .venv/bin/python bench/dashboard.py --skip-baseline --runs 3
    .venv/bin/python bench/dashboard.py --trials 100000 --runs 1 --profiles 5 \
        --baseline-charts history --chart-sizes ''

Measures, over real HTTP against a uvicorn server:

1. server: ``/version`` on a fresh server (loads the study's trial table), then
   every chart endpoint once (figure built), once more after a new trial finished
   (incremental refresh + rebuild), and cached; medians over ``--runs`` fresh servers;
   the same for a second study of as many trials, multi-objective compression trials
   (``bench/synthetic/compression.py``), and its Pareto and accuracy-against-size
   charts; the diagnosis of the first study;
   every other page's request too (study list, workers, study and trial pages,
   compare charts);
2. browser (``bench/dashboard_live.py``), per fresh Chromium profile (``--profiles``):
   time from navigation start to the first drawn chart
   (``performance.mark('hpo:first-chart')`` in app.js) on the first visit (fresh
   server, empty profile), a second and returning visits, after a server restart; and
   a live update (a trial finishes: until the open page's counts and first chart show
   it, the page polling every ``--poll-s``);
   then the server's resident memory after answering every page and chart (a child
   process);
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import optuna  # noqa: E402
import plotly  # noqa: E402

from bench import dashboard_charts, dashboard_live  # noqa: E402
from bench.dashboard_report import FRESH, median, report  # noqa: E402
from bench.synthetic import compression, demo, seeding  # noqa: E402
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
COMPRESSION_STUDY = "bench-10k-compression"
COMPRESSION_CHARTS = ("pareto", "size")


#: The page's poll interval in the browser rounds (``--poll-s``; the server's default is 3 s).
POLL_S = {"value": 3.0}


def make_settings(url: str, tmp: Path) -> Settings:
    return Settings(
        database_url=url, auth=True, token_file=tmp / "tokens.json", reaper_interval_s=3600.0
    )


@dataclass(frozen=True)
class Studies:
    """The seeded studies: the optimizer study and the multi-objective compression one."""

    single: int
    compression: int


def seed(url: str, tmp: Path, trials: int) -> tuple[Studies, str, float]:
    """Create the big studies; returns (their ids, a viewer token, seconds)."""
    from service.app import create_app

    app = create_app(make_settings(url, tmp))
    ctx = app.state.ctx
    started = time.perf_counter()
    workers = seeding.register_workers(ctx, 16)
    budget = max(20_000, 2 * trials)  # the budget is not spent: the studies are running
    single = seeding.seed_bulk(
        ctx, demo.demo_spec(STUDY, max_trials=budget), trials, workers=workers
    )
    spec = compression.compression_spec(COMPRESSION_STUDY, max_trials=budget)
    multi = seeding.seed_bulk(ctx, spec, trials, workers=workers, simulate=compression.simulate)
    elapsed = time.perf_counter() - started
    with ctx.db.session() as session:
        token, _ = create_token_without_commit(session, "viewer", "bench")
    ctx.close()
    return Studies(single, multi), token, elapsed


class Server:
    """A fresh app (empty dashboard caches) served by uvicorn in a thread."""

    def __init__(
        self, url: str, tmp: Path, port: int | None = None, wait_warm: bool = True
    ) -> None:
        from service.app import create_app

        self.app = create_app(make_settings(url, tmp))
        dash = self.app.state.dashboard
        dash.poll_interval_s = POLL_S["value"]
        self.server, self.thread, self.base = start_server(self.app, port)
        self.port = int(self.base.rsplit(":", 1)[1])
        # A server that has been up: its start-up warming (libraries, recent studies'
        # trial tables, headers and first charts) is done (``dash.warmed``) before any
        # request is timed; ``wait_warm=False`` times a server just started instead.
        if wait_warm and not dash.warmed.wait(timeout=600):
            raise RuntimeError("the dashboard's start-up warming did not finish in 600 s")
        self.warm_s: float | None = dash.warm_s

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
    sampler = optuna.samplers.RandomSampler()  # TPE would read every trial first
    study = optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    study.tell(trial, 0.97)
    storage.engine.dispose()


def finish_one_compression_trial(url: str) -> None:
    """The same in the compression study: two values and the final metrics."""
    storage = optuna.storages.RDBStorage(url)
    sampler = optuna.samplers.RandomSampler()
    study = optuna.load_study(study_name=COMPRESSION_STUDY, storage=storage, sampler=sampler)
    trial = study.ask()
    trial.suggest_categorical("quantize", list(compression.BYTES_PER))
    trial.set_user_attr("final_metrics", {"val_accuracy": 0.95, "model_bytes": 50_000})
    study.tell(trial, [0.95, 50_000.0])
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
#: The compression study's rows.
OF_COMPRESSION = "compression study: "
Rounds = dict[str, dict[str, float]]


def server_round(url: str, tmp: Path, studies: Studies, token: str) -> Rounds:
    """One fresh server: ms per request, first build / after a change / cached, for the
    optimizer study's charts and diagnosis, then the compression study's charts."""
    server = Server(url, tmp)
    out: Rounds = {"cold": {}, "changed": {}, FRESH: {}, "cached": {}}
    plain = [n for n in STUDY_CHARTS if n not in COMPRESSION_CHARTS]
    try:
        with httpx.Client(
            base_url=server.base, timeout=600, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            api = f"/api/v1/dashboard/studies/{studies.single}"
            _study_round(server, client, out, studies.single, plain, finish_one_trial, "")
            _diagnosis_round(client, out, api)
            out["cached"]["trials table page (sorted by value)"] = ms(
                client, f"{api}/trials?limit=50&sort=value&order=desc"
            )
            out["cached"]["learning-curve delta"] = ms(client, f"{api}/curves?since=0")
            _pages_round(client, out, studies)
            _study_round(
                server,
                client,
                out,
                studies.compression,
                list(COMPRESSION_CHARTS),
                finish_one_compression_trial,
                OF_COMPRESSION,
            )
    finally:
        server.close()
    return out


def _pages_round(client: httpx.Client, out: Rounds, studies: Studies) -> None:
    """The other pages: first answer and cached (HTML pages and their JSON APIs)."""
    ids = f"{studies.single},{studies.compression}"
    pages = {
        "page: studies list (its JSON)": "/api/v1/dashboard/studies",
        "page: workers (its JSON)": "/api/v1/dashboard/workers",
        "page: study (HTML)": f"/dashboard/studies/{studies.single}",
        "page: trial (HTML)": f"/dashboard/studies/{studies.single}/trials/7",
        "page: trial (its chart)": f"/api/v1/dashboard/studies/{studies.single}/trials/7/chart",
        "page: compare histories": f"/api/v1/dashboard/compare/histories?ids={ids}",
        "page: compare distributions": f"/api/v1/dashboard/compare/distributions?ids={ids}",
    }
    for name, path in pages.items():
        for kind in ("cold", "cached"):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            out[kind][name] = (time.perf_counter() - started) * 1000


def _diagnosis_round(client: httpx.Client, out: Rounds, api: str) -> None:
    """A big study's diagnosis: the first answer (``pending``), the time until the one
    built in the background is served, and cached."""
    started = time.perf_counter()
    out["cold"]["diagnosis: first answer (pending)"], body = timed_get(client, f"{api}/diagnosis")
    while body.get("pending"):
        time.sleep(0.05)
        body = timed_get(client, f"{api}/diagnosis")[1]
    out["cold"]["diagnosis: until served (built in the background)"] = (
        time.perf_counter() - started
    ) * 1000
    out["cached"]["diagnosis"] = ms(client, f"{api}/diagnosis")


def _study_round(
    server: Server,
    client: httpx.Client,
    out: Rounds,
    study_id: int,
    charts: list[str],
    finish: Callable[[str], None],
    prefix: str,
) -> None:
    """A study's trial table and version, its charts built, rebuilt after ``finish``
    ended a trial, and cached."""
    dash, url = server.app.state.dashboard, server.app.state.ctx.settings.database_url
    api = f"/api/v1/dashboard/studies/{study_id}"
    dash.forget(study_id)
    started = time.perf_counter()
    dash.frame(study_id)
    out["cold"][prefix + TABLE] = (time.perf_counter() - started) * 1000
    out["cold"][prefix + VERSION] = ms(client, f"{api}/version")
    for name in charts:
        out["cold"][prefix + name] = ms(client, f"{api}/charts/{name}")
    finish(url)
    out["changed"][prefix + VERSION], body = timed_get(client, f"{api}/version")
    for name in charts:
        first, fresh = until_fresh(client, f"{api}/charts/{name}", body["trials"])
        out["changed"][prefix + name], out[FRESH][prefix + name] = first, fresh
    for name in charts:
        runs = [ms(client, f"{api}/charts/{name}") for _ in range(5)]
        out["cached"][prefix + name] = median(runs)
    out["cached"][prefix + VERSION] = ms(client, f"{api}/version")


def browser_rounds(
    url: str, tmp: Path, study_id: int, token: str, runs: int
) -> dict[str, list[float]]:
    """``runs`` fresh browser profiles (``bench/dashboard_live.py``)."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {}
    with sync_playwright() as p:
        for _ in range(runs):
            one = dashboard_live.browser_round(
                p,
                lambda port, warm=True: Server(url, tmp, port, warm),
                study_id,
                token,
                tmp,
                BROWSER_ARGS,
                lambda: finish_one_trial(url),
            )
            for case, value in one.items():
                out.setdefault(case, []).append(value)
            print(json.dumps(one), flush=True)
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


def baseline(url: str, limit_s: float, charts: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for chart in charts:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh servers per server round")
    parser.add_argument("--profiles", type=int, default=5, help="fresh browser profiles")
    parser.add_argument("--poll-s", type=float, default=0.5, help="the pages' poll interval")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--baseline-charts", default=",".join(BASELINE), help="naive Optuna charts to time"
    )
    parser.add_argument("--database-url", default=None, help="an EMPTY database (default: SQLite)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--baseline-limit-s", type=float, default=300.0)
    parser.add_argument(
        "--chart-sizes",
        default="200,10000",
        help="trial counts for the chart-path comparison ('' to skip)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.md")
    parser.add_argument("--baseline-one", help=argparse.SUPPRESS)
    parser.add_argument("--rss-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    POLL_S["value"] = args.poll_s
    if args.baseline_one:
        baseline_one(args.database_url, args.baseline_one)
        return
    if args.rss_one:
        job = json.loads(args.rss_one)
        factory = lambda port: Server(job["url"], Path(job["tmp"]), port)  # noqa: E731
        print(json.dumps(dashboard_live.rss_child(factory, job["token"], job["studies"])))
        return
    tmp = Path(tempfile.mkdtemp(prefix="hpo-dashboard-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    data: dict[str, Any] = {"env": environment(url)}
    studies, token, data["seed_s"] = seed(url, tmp, args.trials)
    study_id = studies.single
    print(f"seeded 2 x {args.trials} trials in {data['seed_s']:.1f} s", flush=True)
    data["server"] = [server_round(url, tmp, studies, token) for _ in range(args.runs)]
    print(json.dumps(data["server"], indent=1), flush=True)
    if not args.skip_browser:
        data["browser"] = browser_rounds(url, tmp, study_id, token, args.profiles)
        print(json.dumps(data["browser"], indent=1), flush=True)
    if not args.skip_rss:
        data["rss"] = dashboard_live.rss(__file__, url, tmp, token, [study_id, studies.compression])
        print(json.dumps(data["rss"]), flush=True)
    if not args.skip_baseline:
        charts = [c for c in args.baseline_charts.split(",") if c]
        data["baseline"] = baseline(url, args.baseline_limit_s, charts)
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
