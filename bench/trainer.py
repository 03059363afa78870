"""Benchmark: the seed's training loop versus workers.trainer, same settings, same device.

    python bench/trainer.py --data-dir DIR [--device cpu|cuda|auto] [--epochs 1]
                            [--repeats 1] [--output bench/results/trainer-cpu.md]

Both train the 784-512-10 MLP with SGD lr 0.01, batch 64 on full MNIST. Seconds
per epoch: the seed's DataLoader loop (training only) versus our epoch_time_s
(training plus the 5k validation pass, so the comparison does not flatter us).
With --repeats N both run N times, alternating, and the medians are reported.
--output writes the table as markdown, or as JSON when the name ends in .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torchvision

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # seed_loop, next to this file
sys.path.insert(1, str(HERE.parent))  # workers, when the project is not installed

from seed_loop import run_seed_loop  # noqa: E402

from hpo.settings import TrainConfig  # noqa: E402
from workers.data import load_mnist  # noqa: E402
from workers.trainer import train  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data-dir", default=None, help="folder holding MNIST/raw (default: $HPO_DATA_DIR)"
    )
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="alternating runs of both; medians")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument("--output", default=None, help="also write the table here (.md or .json)")
    return p.parse_args(argv)


def machine(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    info = {
        "device": device,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),  # other processes share this machine
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_ours(root: str | None, device: str, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_mnist(root, device)  # cached after the first repeat
    load_s = time.perf_counter() - t0
    settings = {"optimizer": "sgd", "lr": 0.01, "batch_size": 64, "hidden": 512, "depth": 1}
    c0 = time.process_time()
    result = train(TrainConfig.from_settings({**settings, "epochs": epochs}, seed=0), data, device)
    cpu_s = time.process_time() - c0  # includes the final test evaluation: slightly unfair to us
    return {
        "s_per_epoch": statistics.mean(h["epoch_time_s"] for h in result.history),
        "cpu_s_per_epoch": cpu_s / epochs,
        "val_accuracy": result.objective,
        "test_accuracy": result.final["test_accuracy"],
        "load_s": load_s,
    }


def run_seed(root: str, device: str, epochs: int) -> dict[str, Any]:
    result = run_seed_loop(root, epochs=epochs, device=device, seed=0)
    return {
        "s_per_epoch": statistics.mean(result.epoch_times_s),
        "cpu_s_per_epoch": statistics.mean(result.epoch_cpu_s),
        "test_accuracy": result.test_accuracy,
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def render_markdown(info: dict[str, Any], seed: list[dict], ours: list[dict], epochs: int) -> str:
    s_seed, s_ours = median_of(seed, "s_per_epoch"), median_of(ours, "s_per_epoch")
    c_seed, c_ours = median_of(seed, "cpu_s_per_epoch"), median_of(ours, "cpu_s_per_epoch")
    lines = [
        f"# Trainer benchmark: seed loop vs workers.trainer ({epochs} epoch(s), full MNIST)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        f"SGD lr 0.01, batch 64, MLP 784-512-10; median of {len(seed)} alternating run(s).",
        "",
        "| loop | s/epoch (wall) | speed-up | CPU s/epoch | speed-up (CPU) "
        "| val accuracy | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| seed (DataLoader + ToTensor + Normalize) | {s_seed:.2f} | 1.0x | {c_seed:.2f} | 1.0x "
        f"| n/a | {median_of(seed, 'test_accuracy'):.2%} |",
        f"| workers.trainer | {s_ours:.2f} | {s_seed / s_ours:.1f}x | {c_ours:.2f} "
        f"| {c_seed / c_ours:.1f}x | {median_of(ours, 'val_accuracy'):.2%} "
        f"| {median_of(ours, 'test_accuracy'):.2%} |",
        "",
        "Seed s/epoch: its training loop only. Ours: epoch_time_s, training plus the 5k "
        "validation pass; ours trains on 55k images (5k held out for validation), the seed on 60k.",
        "CPU s/epoch: process CPU time (all threads), less sensitive than wall time to other "
        "processes on a shared machine; ours includes the final 10k test evaluation.",
        f"Our one-off data load (tensors on the device, once per process): "
        f"{ours[0]['load_s']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    root = args.data_dir or os.environ.get("HPO_DATA_DIR") or "./data"
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_runs, our_runs = [], []
    for i in range(args.repeats):
        seed_runs.append(run_seed(root, device, args.epochs))
        our_runs.append(run_ours(root, device, args.epochs))
        print(f"repeat {i + 1}: seed {seed_runs[-1]}, ours {our_runs[-1]}", file=sys.stderr)
    info = machine(device)
    table = render_markdown(info, seed_runs, our_runs, args.epochs)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            ratio = median_of(seed_runs, "s_per_epoch") / median_of(our_runs, "s_per_epoch")
            body = {"machine": info, "epochs": args.epochs, "speedup": ratio}
            body |= {"seed": seed_runs, "ours": our_runs}
            out.write_text(json.dumps(body, indent=2) + "\n")
        else:
            out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
