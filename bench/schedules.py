"""Schedules at equal budget: PBT, promotion ASHA, TPE + median pruner, random.

    python -m bench.schedules --data-dir DIR [--seeds 3] [--budget 48] [--out FILE.md]

One live server (SQLite) and one solo worker per core (one torch thread each),
the reference MNIST trainer on a subset (``--subset`` training images, 5,000
held-out validation images, ``--epochs`` per full trial). Every study gets the
same total budget of ``--budget`` epochs:

* random and tpe-median: ``budget / epochs`` trials (the pruner may spend less);
* asha: promotion ASHA, reduction factor 2, rungs 1, 2, 4 epochs (when epochs is
  4): ``budget / 2`` trials start, half go on at each rung;
* pbt: ``budget / epochs`` members, perturbation interval 1 epoch, quantile
  0.25, lr / momentum / weight_decay mutated.

Prints per schedule and seed the best validation accuracy, the epochs trained
and the epochs trained (in report order) until one report reached 97 %, then one
line ``best <schedule>: <accuracy>`` per schedule (mean best over the seeds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import hpo
from bench._common import publish
from bench._fleet import Fleet

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
}
SCHEDULES = ("pbt", "asha", "tpe-median", "random")
TARGET = 0.97


def spec(kind: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The study of one schedule and seed at the budget of ``args``."""
    fixed = {
        "epochs": args.epochs,
        "train_subset": args.subset,
        "val_size": 5000,
        "optimizer": "momentum",
    }
    full = args.budget // args.epochs
    base: dict[str, Any] = {
        "name": f"{kind}-{seed}",
        "direction": "maximize",
        "sampler": {"name": "random", "seed": seed},
        "fixed": fixed,
        "space": SPACE,
        "budget": {"max_trials": full},
    }
    if kind == "tpe-median":
        base["sampler"]["name"] = "tpe"
        base["pruner"] = {"name": "median", "options": {"n_startup_trials": 3}}
    elif kind == "asha":
        base["budget"] = {"max_trials": args.budget // 2}
        base["schedule"] = {
            "name": "asha",
            "mode": "promotion",
            "reduction_factor": 2,
            "min_resource": 1,
            "max_resource": args.epochs,
        }
    elif kind == "pbt":
        base["budget"] = {"max_trials": full * args.epochs}
        base["schedule"] = {
            "name": "pbt",
            "population_size": full,
            "perturbation_interval": 1,
            "quantile": 0.25,
            "resample_probability": 0.25,
            "mutations": {
                "lr": {"factors": [0.8, 1.25]},
                "momentum": {"factors": [0.95, 1.05]},
                "weight_decay": {"factors": [0.5, 2.0]},
            },
        }
    return base


def measure(api: hpo.Client, name: str) -> dict[str, Any]:
    """Best validation accuracy, epochs trained, epochs until the first report >= 97 %."""
    reports = []
    for item in api.trials(name):
        for m in api.trial(name, item.number).metrics:
            if m.value is not None:
                reports.append((m.created_at, m.value))
    reports.sort()
    to_target = next((i + 1 for i, (_, v) in enumerate(reports) if v >= TARGET), None)
    best = max((v for _, v in reports), default=float("nan"))
    return {"best": best, "epochs": len(reports), "to_target": to_target}


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every schedule and seed on one fleet, one study at a time."""
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in args.schedules}
    workdir = Path(tempfile.mkdtemp(prefix="hpo-schedules-"))
    with Fleet(workdir, args.data_dir) as fleet:
        for _ in range(args.workers):
            fleet.worker(threads=1)
        time.sleep(8)  # workers load MNIST and register
        with hpo.Client(fleet.url, fleet.tokens["admin"]) as api:
            for seed in range(1, args.seeds + 1):
                for kind in args.schedules:
                    started = time.monotonic()
                    api.create_study(spec(kind, seed, args))
                    api.wait(f"{kind}-{seed}", progress=False, poll_s=0.5)
                    row = {**measure(api, f"{kind}-{seed}"), "seed": seed}
                    row["wall_s"] = time.monotonic() - started
                    results[kind].append(row)
                    print(
                        f"{kind} seed {seed}: best {row['best']:.4f}, {row['epochs']} epochs, "
                        f"to {TARGET:.0%}: {row['to_target']}, {row['wall_s']:.0f} s",
                        flush=True,
                    )
    return results


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    """The markdown table and the ``best <schedule>: <accuracy>`` lines."""
    lines = [
        "# Schedules at equal budget (bench/schedules.py)",
        "",
        f"Machine: {args.machine}; {args.workers} solo workers, one torch thread each.",
        f"Command: `python -m bench.schedules --data-dir DIR --seeds {args.seeds} "
        f"--budget {args.budget} --epochs {args.epochs} --subset {args.subset}`",
        f"Workload: reference MLP on {args.subset} MNIST training images, 5,000 validation "
        f"images, momentum SGD, {args.epochs} epochs per full trial, budget {args.budget} "
        "epochs per study.",
        "",
        "| schedule | best val accuracy (mean over seeds) | per seed | epochs trained | "
        f"epochs to {TARGET:.0%} | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rows in results.items():
        best = statistics.mean(r["best"] for r in rows)
        per = ", ".join(f"{r['best']:.4f}" for r in rows)
        epochs = ", ".join(str(r["epochs"]) for r in rows)
        target = ", ".join(str(r["to_target"] or "never") for r in rows)
        wall = statistics.mean(r["wall_s"] for r in rows)
        lines.append(f"| {kind} | {best:.4f} | {per} | {epochs} | {target} | {wall:.0f} |")
    lines.append("")
    lines += [
        f"best {k}: {statistics.mean(r['best'] for r in rows):.4f}" for k, rows in results.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HPO_DATA_DIR", "data"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=48, help="epochs per study")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a full trial")
    parser.add_argument("--subset", type=int, default=8000, help="training images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    parser.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} CPUs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    publish(report(args, run(args)), args.out)


if __name__ == "__main__":
    main()
