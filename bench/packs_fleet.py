"""Fused packs through a live server: one ``--pack`` worker against solo workers, same cores.

    python -m bench.packs_fleet --data-dir DIR [--trials 64] [--pack 8] [--out FILE.md]

Runs the same study twice on a fresh server each time (a seeded random sampler,
so the same trials): once with one worker that trains fused packs of K using
every core, once with one solo worker per core (one torch thread each, the
best solo set-up on a CPU). Prints the wall time from study creation to its
last trial, trials per hour and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import hpo
from bench._fleet import Fleet

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adam", "rmsprop", "adamw"]
SPACE = {
    "optimizer": {"type": "categorical", "choices": OPTIMIZERS},
    "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
}


def spec(trials: int, epochs: int, subset: int) -> dict:
    """One architecture and batch size, so that every trial fits one pack."""
    return {
        "name": "fleet",
        "direction": "maximize",
        "sampler": {"name": "random", "seed": 7},
        "budget": {"max_trials": trials},
        "fixed": {"epochs": epochs, "train_subset": subset, "hidden": 512, "batch_size": 64},
        "space": SPACE,
    }


def run(args: argparse.Namespace, packed: bool) -> float:
    """Seconds from study creation to the last trial finished."""
    workdir = Path(tempfile.mkdtemp(prefix="hpo-packs-fleet-"))
    with Fleet(workdir, args.data_dir) as fleet:
        cores = os.cpu_count() or 1
        if packed:
            fleet.worker("--pack", str(args.pack), threads=cores)
        else:
            for _ in range(cores):
                fleet.worker(threads=1)
        time.sleep(5)  # workers load MNIST and register before the clock starts
        with hpo.Client(fleet.url, fleet.tokens["admin"]) as api:
            started = time.monotonic()
            api.create_study(spec(args.trials, args.epochs, args.subset))
            done = api.wait("fleet", progress=False, poll_s=0.5)
            took = time.monotonic() - started
    print(f"{'packed' if packed else 'solo'}: {took:.1f} s, {done.counts.complete} complete")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HPO_DATA_DIR", "data"))
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    solo, packed = run(args, packed=False), run(args, packed=True)
    lines = [
        f"# {args.trials}-trial study through a live server: {os.cpu_count()} CPUs "
        f"({platform.machine()}), no GPU",
        "",
        f"{args.epochs} epochs on {args.subset} images, hidden 512, batch 64; random sampler.",
        "",
        "| workers | wall s | trials/hour |",
        "|---|---|---|",
        f"| {os.cpu_count()} solo (1 thread each) | {solo:.1f} | {3600 * args.trials / solo:.0f} |",
        f"| 1 with --pack {args.pack} | {packed:.1f} | {3600 * args.trials / packed:.0f} |",
        "",
        f"fleet speedup --pack {args.pack}: {solo / packed:.2f}x",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
