"""Run the CPU-sized compression study and report its measured Pareto front.

    python -m bench.compression --data-dir DIR [--workers 2] [--out FILE.md]

Starts a server (SQLite in a temporary folder) and worker processes, runs
``studies/mnist-compression-cpu.yaml`` (NSGA-II over pruning, low rank,
quantization and width; accuracy against bytes) and prints the front: per
trial the compression applied, validation accuracy and bytes and latency of the
model as shipped. The summary line names the smallest shipped model within 0.5
accuracy points of the best dense model, with its size and latency against
that dense model's.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import hpo
from bench._fleet import Fleet

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "studies" / "mnist-compression-cpu.yaml"


def _row(api: hpo.Client, number: int) -> dict[str, Any]:
    detail = api.trial("mnist-compression-cpu", number)
    final = detail.user_attrs.get("final_metrics", {})
    return {"number": number, **detail.params, **final}


def _describe(r: dict[str, Any]) -> str:
    parts = [f"h{r['hidden']}"]
    if r.get("prune_amount", 0) > 0.01:
        parts.append(f"prune {r['prune_amount']:.2f} {r['prune_schedule']}")
    if r.get("low_rank"):
        parts.append(f"rank {r['low_rank']}")
    if r.get("quantize", "none") != "none":
        parts.append(r["quantize"])
    if r.get("finetune_epochs"):
        parts.append(f"ft {r['finetune_epochs']}")
    return ", ".join(parts)


def report(rows: list[dict[str, Any]], front: set[int]) -> str:
    """The front as a table, and the smallest model close to the best dense one."""
    lines = [
        "| trial | compression | val acc | bytes | latency b1 ms | latency b1024 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in rows if r["number"] in front), key=lambda r: r["model_bytes"]):
        lines.append(
            f"| {r['number']} | {_describe(r)} | {r['val_accuracy']:.4f} | {r['model_bytes']:,} "
            f"| {r['latency_ms_b1']:.3f} | {r['latency_ms_b1024']:.2f} |"
        )
    dense = max(rows, key=lambda r: r["dense_val_accuracy"])
    close = [r for r in rows if r["val_accuracy"] >= dense["dense_val_accuracy"] - 0.005]
    small = min(close, key=lambda r: r["model_bytes"])
    lines.append("")
    lines.append(
        f"best dense model (trial {dense['number']}, {_describe(dense)} before compression): "
        f"val {dense['dense_val_accuracy']:.4f}, {dense['dense_model_bytes']:,} bytes, "
        f"{dense['dense_latency_ms_b1']:.3f} ms at batch 1, "
        f"{dense['dense_latency_ms_b1024']:.2f} ms at 1024"
    )
    lines.append(
        f"smallest within 0.5 points of it: trial {small['number']} ({_describe(small)}): "
        f"val {small['val_accuracy']:.4f}, {small['model_bytes']:,} bytes "
        f"({dense['dense_model_bytes'] / small['model_bytes']:.1f}x smaller), "
        f"{small['latency_ms_b1']:.3f} ms at batch 1, {small['latency_ms_b1024']:.2f} ms at 1024"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HPO_DATA_DIR", "data"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hpo-compression-"))
    started = time.monotonic()
    with Fleet(workdir, args.data_dir) as fleet:
        for _ in range(args.workers):
            fleet.worker("--studies", "mnist-compression-cpu")
        with hpo.Client(fleet.url, fleet.tokens["admin"]) as api:
            api.create_study(yaml.safe_load(SPEC.read_text()))
            api.wait("mnist-compression-cpu", progress=True, poll_s=5)
            rows = [
                _row(api, t.number) for t in api.trials("mnist-compression-cpu", state="complete")
            ]
            front = {t.number for t in api.pareto("mnist-compression-cpu").trials}
    text = (
        f"# studies/mnist-compression-cpu.yaml: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"no GPU, {args.workers} workers\n\n"
        f"{len(rows)} trials in {time.monotonic() - started:.0f} s, {len(front)} on the front\n\n"
    )
    text += report(rows, front)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
