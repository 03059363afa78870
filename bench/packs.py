"""Benchmark: fused trial packs against one trial at a time, same trials, same device.

    python bench/packs.py --data-dir DIR [--device cpu|cuda|auto] [--trials 32]
                          [--epochs 1] [--train-subset N] [--ks 4,8,16,32]
                          [--sampler-seed 42] [--repeats 1] [--threads N] [--output FILE.md]

Samples ``--trials`` trial settings from studies/mnist-optimizers.yaml's search
space (optuna's RandomSampler with ``--sampler-seed`` on an in-memory study; the
study's fixed architecture and batch size, so every trial packs: the gd trials
with each other, the rest together). Trains them solo one after another with
workers.trainer.train, then packed with workers.packs.train_pack at each K, in
the same process on the same device. Prints trials per hour for each, the ratio
to solo, and the largest per-trial difference between packed and solo results.
The last lines are ``speedup K=<k>: <ratio>x`` per K, then
``max_val_accuracy_diff: <fraction>``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # workers, when the project is not installed

from bench._common import publish  # noqa: E402
from hpo.settings import TrainConfig  # noqa: E402
from hpo.spec import StudySpec, to_settings  # noqa: E402
from service.storage.samplers import suggest_params  # noqa: E402
from workers.data import MnistData, load_mnist  # noqa: E402
from workers.outcome import TrainResult  # noqa: E402
from workers.packs import Member, group_by_key, train_pack  # noqa: E402
from workers.trainer import train  # noqa: E402

SPEC = HERE.parent / "studies" / "mnist-optimizers.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw ($HPO_DATA_DIR)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=None, help="images per epoch (all)")
    p.add_argument("--ks", default="4,8,16,32", help="pack sizes, comma-separated")
    p.add_argument("--sampler-seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=1, help="alternating runs of all; medians")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--spec", default=str(SPEC), help="study spec whose space is sampled")
    p.add_argument("--note", default="", help="a line about the machine for the report")
    p.add_argument("--output", default=None, help="also write the report here (markdown)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- trials


def sample_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """The spec's space sampled define-by-run (``when`` conditions, ``setting`` renames),
    as the server samples it."""
    spec = StudySpec.model_validate(yaml.safe_load(Path(args.spec).read_text()))
    fixed = {**spec.fixed, "epochs": args.epochs}
    if args.train_subset is not None:
        fixed["train_subset"] = args.train_subset
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.sampler_seed))
    configs = []
    for number in range(args.trials):
        trial = study.ask()
        settings = {**fixed, **to_settings(spec, suggest_params(trial, spec))}
        configs.append(TrainConfig.from_settings(settings, seed=args.sampler_seed * 1000 + number))
    return configs


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One way of training every trial: wall and CPU seconds, and the results in trial order."""

    label: str
    k: int | None
    wall_s: float
    cpu_s: float
    results: list[TrainResult]

    def trials_per_hour(self) -> float:
        return len(self.results) * 3600 / self.wall_s


def run_solo(configs: list[TrainConfig], data: MnistData, device: torch.device) -> Run:
    wall, cpu = _clock(device)
    results = [train(c, data, device) for c in configs]
    return Run("solo", None, *_elapsed(wall, cpu, device), results)


def run_packed(configs: list[TrainConfig], data: MnistData, device: torch.device, k: int) -> Run:
    """Each group of compatible trials through train_pack with capacity k (refilled as they end)."""
    wall, cpu = _clock(device)
    results: dict[int, TrainResult] = {}
    groups = group_by_key((Member(i, c), c) for i, c in enumerate(configs))
    for key, members in groups.items():
        if key is None:  # not packable (gradual pruning): solo, as a daemon would
            results.update((m.id, train(m.config, data, device)) for m in members)
        else:
            results.update(train_pack(members, data, device, capacity=k))
    ordered = [results[i] for i in range(len(configs))]
    return Run(f"pack K={k}", k, *_elapsed(wall, cpu, device), ordered)


def _clock(device: torch.device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _elapsed(wall: float, cpu: float, device: torch.device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def differences(packed: Run, solo: Run) -> dict[str, float]:
    """Largest per-trial differences between packed and solo results."""
    val = test = loss = 0.0
    same_status = True
    for ours, theirs in zip(packed.results, solo.results, strict=True):
        same_status &= ours.status == theirs.status and ours.epochs_run == theirs.epochs_run
        for a, b in zip(ours.history, theirs.history, strict=False):
            val = max(val, abs(a["val_accuracy"] - b["val_accuracy"]))
            if math.isfinite(b["train_loss"]):
                rel = abs(a["train_loss"] - b["train_loss"]) / max(abs(b["train_loss"]), 1e-12)
                loss = max(loss, rel)
        if "test_accuracy" in theirs.final and "test_accuracy" in ours.final:
            test = max(test, abs(ours.final["test_accuracy"] - theirs.final["test_accuracy"]))
    return {"val_accuracy": val, "test_accuracy": test, "train_loss_rel": loss, "same": same_status}


def warm_up(data: MnistData, device: torch.device) -> None:
    """First calls pay one-off costs (kernels, allocator, lazy imports): not part of any run."""
    c = TrainConfig.from_settings({"train_subset": 640, "epochs": 1, "optimizer": "adam"})
    train(c, data, device)
    train_pack([Member(0, c), Member(1, c)], data, device, capacity=2)


# --------------------------------------------------------------------------- report


def machine(device: torch.device) -> str:
    cpu = platform.processor() or "unknown"
    info = Path("/proc/cpuinfo")
    if info.exists():
        lines = info.read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (
        f"device {device}, gpu {gpu}, cpu {cpu}, cpu_cores {os.cpu_count()}, "
        f"torch_threads {torch.get_num_threads()}, load_avg_1min {os.getloadavg()[0]:.2f}, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


def report(
    args: argparse.Namespace,
    runs: dict[str, list[Run]],
    configs: list[TrainConfig],
    device: torch.device,
    load: str,
) -> list[str]:
    """The markdown report; its last lines are the speed-ups and the largest difference."""
    solo = _median(runs["solo"])
    lines = _header(args, configs, device, load) + _table(runs, solo)
    if args.repeats > 1:
        for label, group in runs.items():
            lines.append(
                f"{label} wall s per repeat: " + ", ".join(f"{r.wall_s:.1f}" for r in group)
            )
        lines.append("")
    for label, group in runs.items():
        if label != "solo":
            lines.append(f"speedup K={group[0].k}: {solo.wall_s / _median(group).wall_s:.2f}x")
    packed = [r for label, group in runs.items() if label != "solo" for r in group]
    worst = max((differences(r, solo)["val_accuracy"] for r in packed), default=0.0)
    lines.append(f"max_val_accuracy_diff: {worst:.4f}")
    return lines


def _header(
    args: argparse.Namespace, configs: list[TrainConfig], device: torch.device, load: str
) -> list[str]:
    optimizers = sorted({c.optimizer for c in configs})
    counts = ", ".join(f"{o} {sum(c.optimizer == o for c in configs)}" for o in optimizers)
    now = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"# Fused trial packs vs solo trials ({len(configs)} trials, {args.epochs} epoch(s), "
        f"train_subset {args.train_subset or 'all'})",
        "",
        f"Machine: {machine(device)}." + (f" {args.note}" if args.note else ""),
        f"Load average (1/5/15 min) before / after: {load} / {now}",
        "",
        f"Trials: the space of {Path(args.spec).name}, RandomSampler seed {args.sampler_seed}, "
        f"optimizers: {counts}. Median of {args.repeats} alternating run(s).",
        "",
    ]


def _table(runs: dict[str, list[Run]], solo: Run) -> list[str]:
    lines = [
        "| run | wall s | CPU s | trials/hour | speed-up (wall) | speed-up (CPU) "
        "| max Δ val acc | max Δ test acc | max rel Δ train loss | same status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, group in runs.items():
        r = _median(group)
        cells = [label, f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}", f"{r.trials_per_hour():.0f}"]
        cells += [f"{solo.wall_s / r.wall_s:.2f}x", f"{solo.cpu_s / r.cpu_s:.2f}x"]
        if label == "solo":
            cells += ["", "", "", ""]
        else:
            d = differences(r, solo)
            cells += [f"{d['val_accuracy']:.4f}", f"{d['test_accuracy']:.4f}"]
            cells += [f"{d['train_loss_rel']:.1e}", "yes" if d["same"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _median(group: list[Run]) -> Run:
    """The repeats' median wall and CPU seconds (their results are the same every time)."""
    wall = statistics.median(r.wall_s for r in group)
    cpu = statistics.median(r.cpu_s for r in group)
    return Run(group[0].label, group[0].k, wall, cpu, group[0].results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data = load_mnist(args.data_dir, device)
    configs = sample_configs(args)
    ks = [int(k) for k in args.ks.split(",") if k]
    warm_up(data, device)
    runs: dict[str, list[Run]] = {"solo": []} | {f"pack K={k}": [] for k in ks}
    for _ in range(args.repeats):
        runs["solo"].append(run := run_solo(configs, data, device))
        print(f"solo: {run.wall_s:.1f} s", flush=True)
        for k in ks:
            runs[f"pack K={k}"].append(run := run_packed(configs, data, device, k))
            print(f"pack K={k}: {run.wall_s:.1f} s", flush=True)
    lines = report(args, runs, configs, device, load)
    publish("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
