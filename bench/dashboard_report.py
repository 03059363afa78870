"""The Markdown report of ``bench/dashboard.py`` (server, browser, chart paths, baseline)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench import dashboard_charts

FRESH = "until the new figure is served"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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
        cells = [
            _cell([r[kind][name] for r in rounds if name in r[kind]])
            for kind in ("cold", "changed", FRESH, "cached")
        ]
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
            naive = f"{result['load_s']:.1f} | {result['total_s']:.1f} | {result['json_mb']:.1f}"
        else:
            naive = f"— | {result.get('timeout_s', 'error')} (limit) | —"
        rows.append(f"| {chart} | {naive} | {fresh} | {cached} |")
    return rows


def report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    lines = [
        f"# Dashboard with a {args.trials:,}-trial study",
        "",
        f"`.venv/bin/python bench/dashboard.py --runs {args.runs}` on "
        f"{time.strftime('%Y-%m-%d')}; {args.runs} fresh server(s) per measurement.",
        "",
        "| environment | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in data["env"].items()],
        f"| seeding 2 x {args.trials:,} trials (bulk insert) | {data['seed_s']:.1f} s |",
        "",
        "## Server: answer time per request (ms, median over fresh servers)",
        "",
        "A fresh server has empty caches: `version` reads the trial table of the study "
        "(one joined query), then each chart is built once and cached under the study's "
        'version. "After a trial finished": the version changed, only new/unfinished '
        'trials are read again and every chart is rebuilt. Rows "compression study": a '
        "second study of as many trials, two objectives "
        "(val_accuracy, model_bytes) and the trainer's final metrics "
        "(`bench/synthetic/compression.py`). `diagnosis`: the first study's "
        "(`service.studies.proposals` over every finished trial), built in the background "
        "for a big study, then cached until a trial row changes (and rebuilt at most once per 20 "
        "times its build time).",
        "",
        *_server_table(data["server"]),
    ]
    if "browser" in data:
        lines += [
            "",
            "## Browser: first chart drawn (ms from navigation start)",
            "",
            "| case | median | max |",
            "|---|--:|--:|",
        ]
        lines += [
            f"| {case} | {median(v):,.0f} | {max(v):,.0f} |" for case, v in data["browser"].items()
        ]
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
