"""The Markdown report of ``bench/dashboard.py`` (server, browser, chart paths, baseline)."""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
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


def _size(trials: int) -> str:
    """The row suffix of a study size: '' at 10k (the report's historic rows), ' 100k'."""
    if trials == 10_000:
        return ""
    return f" {trials // 1000}k" if trials % 1000 == 0 else f" {trials:,}"


def _targets(args: argparse.Namespace, data: dict[str, Any]) -> list[str]:
    """Issue 26's targets, medians over the fresh browser profiles."""
    from bench.dashboard_live import CASES, LIVE_CHART, LIVE_COUNTS

    browser, n, suffix = data.get("browser") or {}, args.profiles, _size(args.trials)
    rows = [
        ("first visit", CASES[0], "< 1,000 ms at 10k, < 1,500 ms at 100k"),
        ("returning visit", CASES[2], "< 300 ms"),
        ("second visit", CASES[1], ""),
        ("visit after a server restart", CASES[3], ""),
        ("live update (counts)", LIVE_COUNTS, "< 1 s at 100k"),
        ("live update (first chart)", LIVE_CHART, "< 1 s at 100k"),
    ]
    lines = [
        f"## Targets: {args.trials:,} trials, median over {n} fresh browser profiles",
        "",
        f"Headless Chromium; the page polls every {args.poll_s:g} s (`--poll-s`).",
        "",
        "| measure | ms |",
        "|---|--:|",
    ]
    lines += [f"| {label}{suffix} | {_cell(browser.get(key, []))} |" for label, key, _ in rows]
    lines += ["", "| measure | goal | min | max |", "|---|---|--:|--:|"]
    for label, key, goal in rows:
        got = browser.get(key, [])
        span = f"{min(got):,.0f} | {max(got):,.0f}" if got else "— | —"
        lines.append(f"| {label}{suffix} | {goal or '—'} | {span} |")
    if "rss" in data:
        lines += ["", "Server resident memory (one process, psutil):", ""]
        lines += ["| server RSS | MB |", "|---|--:|"]
        rss = data["rss"]
        lines += [
            f"| {k} | {v:,.0f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in rss.items()
        ]
    return lines + [""]


def report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    command = shlex.join(["python", "bench/dashboard.py", *sys.argv[1:]])
    lines = [
        f"# Dashboard with a {args.trials:,}-trial study",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M')}; {args.runs} fresh server(s) per "
        f"server measurement, {args.profiles} fresh browser profile(s).",
        "",
        *_targets(args, data),
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
