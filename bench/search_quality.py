"""Search quality: does the service search as well as Optuna in-process?

For each test function (bench/_search_functions.py) and sampler, every system runs
the same seeded study ``--seeds`` times; a run's regret is its best value minus the
function's known minimum. The table gives, per system, the median regret with its
quartiles and one-sided Mann-Whitney p-values that the system's regrets are larger
(worse) than Optuna sequential's and, for 4 workers, than Optuna ``n_jobs=4``'s.

Systems (bench/_search_systems.py):

* ``optuna``, ``optuna-4``: ``study.optimize`` in-process, sequential / ``n_jobs=4``;
* ``declared``, ``declared-4``: the service, the space declared in the study spec,
  1 / 4 worker threads leasing over HTTP through ``hpo.Client``;
* ``dbr``, ``dbr-4``: the service, define-by-run (each ``trial.suggest_*`` asks the
  server), 1 / 4 workers.

Four-worker systems sleep ``--delay`` seconds per trial (the "training"), so that
trials overlap in both Optuna's threads and the service's workers.

    python -m bench.search_quality --seeds 20 --trials 50 --gp-trials 25 \\
        --out bench/results/search-quality-cpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from bench._common import publish
from bench._search_functions import FUNCTIONS
from bench._search_systems import SAMPLERS, run_optuna, run_service, service

SYSTEMS = ["optuna", "optuna-4", "declared", "declared-4", "dbr", "dbr-4"]
REFERENCE_4 = "optuna-4"
Cell = tuple[str, str, str]  # function, sampler, system


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="runs per cell (seeds 0..N-1)")
    p.add_argument("--trials", type=int, default=50, help="trials per run")
    p.add_argument("--gp-trials", type=int, default=25, help="trials per GP run (GP is slow)")
    p.add_argument("--functions", default=",".join(FUNCTIONS), help="comma-separated")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    p.add_argument("--delay", type=float, default=0.02, help="seconds per trial, 4 workers")
    p.add_argument("--processes", type=int, default=1, help="seeds run in this many processes")
    p.add_argument("--out", type=Path, help="write the markdown report here")
    p.add_argument("--machine", default=_machine(), help="the machine, in words, for the report")
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    for key, known in (("functions", FUNCTIONS), ("samplers", SAMPLERS), ("systems", SYSTEMS)):
        names = [n for n in getattr(a, key).split(",") if n]
        bad = [n for n in names if n not in known]
        if bad:
            p.error(f"--{key}: unknown {bad}; known: {', '.join(known)}")
        setattr(a, key, names)
    return a


def _machine() -> str:
    """E.g. ``2 CPUs, x86_64, Linux``; pass ``--machine`` to say more (VM, no GPU)."""
    return f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}"


def trials_for(a: argparse.Namespace, sampler: str) -> int:
    return a.gp_trials if sampler == "gp" else a.trials


def run_one(server: Any, a: argparse.Namespace, cell: Cell, seed: int) -> float:
    """One seeded run of ``cell``; its regret."""
    fname, sampler, system = cell
    fn, n = FUNCTIONS[fname], trials_for(a, sampler)
    workers = 4 if system.endswith("-4") else 1
    delay = a.delay if workers > 1 else 0.0
    if system.startswith("optuna"):
        run = run_optuna(fn, sampler, seed, n, jobs=workers, delay=delay)
    else:
        declared = system.startswith("declared")
        run = run_service(
            server, fn, sampler, seed, n, declared=declared, workers=workers, delay=delay
        )
    assert len(run.values) == n, (cell, seed, len(run.values))
    return min(run.values) - fn.optimum


def _seed_chunk(args: tuple[argparse.Namespace, list[Cell], list[int]]) -> dict:
    """Every cell for some seeds, in one process with its own server."""
    a, cells, seeds = args
    warnings.filterwarnings("ignore")
    out: dict[Cell, dict[int, float]] = {c: {} for c in cells}
    with service() as server:
        for cell in cells:
            for seed in seeds:
                out[cell][seed] = run_one(server, a, cell, seed)
    return out


def measure(a: argparse.Namespace) -> dict[Cell, list[float]]:
    """Regrets per cell, ordered by seed; progress on stderr per (function, sampler)."""
    results: dict[Cell, list[float]] = {}
    chunks = [list(range(a.seeds))[i :: a.processes] for i in range(a.processes)]
    t0 = time.monotonic()
    with _pool(a.processes) as pool:
        for fname in a.functions:
            for sampler in a.samplers:
                cells = [(fname, sampler, system) for system in a.systems]
                parts = pool([(a, cells, chunk) for chunk in chunks if chunk])
                for cell in cells:
                    merged = {s: r for part in parts for s, r in part[cell].items()}
                    results[cell] = [merged[s] for s in sorted(merged)]
                medians = " ".join(f"{c[2]}={np.median(results[c]):.3f}" for c in cells)
                print(
                    f"[{time.monotonic() - t0:6.0f}s] {fname} {sampler}: {medians}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


@contextlib.contextmanager
def _pool(processes: int) -> Iterator[Any]:
    if processes <= 1:
        yield lambda jobs: [_seed_chunk(j) for j in jobs]
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield lambda jobs: pool.map(_seed_chunk, jobs)


def p_worse(values: list[float], reference: list[float]) -> float:
    """One-sided Mann-Whitney: P(regrets this small a shift or larger | same distribution)."""
    return float(mannwhitneyu(values, reference, alternative="greater").pvalue)


def table(a: argparse.Namespace, results: dict[Cell, list[float]]) -> list[str]:
    lines = [
        "| function | sampler | trials | system | median regret | q1 | q3 "
        "| p worse vs optuna | p worse vs optuna-4 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fname in a.functions:
        for sampler in a.samplers:
            seq = results.get((fname, sampler, "optuna"))
            par = results.get((fname, sampler, REFERENCE_4))
            for system in a.systems:
                r = results[(fname, sampler, system)]
                q1, med, q3 = np.percentile(r, [25, 50, 75])
                p_seq = f"{p_worse(r, seq):.3f}" if seq and system != "optuna" else ""
                four = system.endswith("-4") and system != REFERENCE_4 and par
                p_par = f"{p_worse(r, par):.3f}" if four else ""
                lines.append(
                    f"| {fname} | {sampler} | {trials_for(a, sampler)} | {system} | {med:.4f} "
                    f"| {q1:.4f} | {q3:.4f} | {p_seq} | {p_par} |"
                )
    return lines


def flagged(a: argparse.Namespace, results: dict[Cell, list[float]]) -> list[str]:
    """Service cells worse than Optuna with the same worker count at p < 0.05."""
    bad = []
    for (fname, sampler, system), r in results.items():
        if system.startswith("optuna"):
            continue
        ref = REFERENCE_4 if system.endswith("-4") else "optuna"
        base = results.get((fname, sampler, ref))
        if base and p_worse(r, base) < 0.05:
            bad.append(f"{fname}/{sampler}/{system} (p={p_worse(r, base):.3f} vs {ref})")
    return bad


def report(a: argparse.Namespace, results: dict[Cell, list[float]], took: float) -> str:
    import optuna

    bad = flagged(a, results)
    verdict = "none" if not bad else ", ".join(bad)
    tests = sum(not s.startswith("optuna") for (_, _, s) in results)
    head = [
        "# Search quality: the service against Optuna in-process",
        "",
        f"Machine: {a.machine}. Optuna {optuna.__version__}, Python "
        f"{platform.python_version()}; {a.seeds} seeds per cell, {a.trials} trials per run "
        f"({a.gp_trials} for GP), 4-worker systems sleep {a.delay} s per trial; "
        f"{took / 60:.1f} min in {a.processes} process(es).",
        "",
        f"Command: `python -m bench.search_quality {shlex.join(a.argv)}`",
        "",
        "Regret = best value - known minimum (lower is better). p: one-sided "
        "Mann-Whitney U that the system's regrets are larger than the reference's.",
        "",
        f"Service cells worse than Optuna with the same worker count at p < 0.05: {verdict}.",
        f"That is {tests} tests, uncorrected: about {0.05 * tests:.1f} of them fall under "
        "0.05 by chance alone when the service searches exactly as Optuna does.",
        "",
    ]
    return "\n".join(head + table(a, results)) + "\n"


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    t0 = time.monotonic()
    results = measure(a)
    text = report(a, results, time.monotonic() - t0)
    publish(text, a.out)


if __name__ == "__main__":
    main()
