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
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

import hpo

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "studies" / "mnist-compression-cpu.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(workdir: Path, workers: int, data_dir: str) -> tuple[list[subprocess.Popen], str, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(
        HPO_DATABASE_URL=f"sqlite:///{workdir / 'hpo.db'}", HPO_TOKEN_FILE=str(workdir / "t.json")
    )
    port = _free_port()
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the process
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "server", "--port", str(port)],
                              env=env, stdout=log, stderr=log)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):  # migrations, then uvicorn: ready once /healthz answers
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    tokens = json.loads((workdir / "t.json").read_text())
    for i in range(workers):
        wlog = open(workdir / f"worker-{i}.log", "w")  # noqa: SIM115
        argv = [sys.executable, "-m", "workers", "--server", url, "--device", "cpu",
                "--data-dir", data_dir, "--studies", "mnist-compression-cpu"]  # fmt: skip
        wenv = {**env, "HPO_TOKEN": tokens["worker"], "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(argv, env=wenv, stdout=wlog, stderr=wlog))
    return procs, url, tokens


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
    lines = ["| trial | compression | val acc | bytes | latency b1 ms | latency b1024 ms |",
             "|---|---|---|---|---|---|"]  # fmt: skip
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
    procs, url, tokens = _start(workdir, args.workers, args.data_dir)
    started = time.monotonic()
    try:
        with hpo.Client(url, tokens["admin"]) as api:
            api.create_study(yaml.safe_load(SPEC.read_text()))
            api.wait("mnist-compression-cpu", progress=True, poll_s=5)
            rows = [
                _row(api, t.number) for t in api.trials("mnist-compression-cpu", state="complete")
            ]
            front = {t.number for t in api.pareto("mnist-compression-cpu").trials}
    finally:
        for proc in procs:
            proc.terminate()
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
