"""Benchmark: what checkpoints cost the reference trainer, and how fast a killed trial resumes.

    python bench/checkpoints.py --data-dir DIR [--epochs 3] [--repeats 3]
                                [--output bench/results/checkpoints-cpu.md]

1. Overhead. The reference trainer on full MNIST (55k images, adam, so the
   optimizer state is in the checkpoint too) runs with and without
   checkpoints, alternating, against a real server: with checkpoints each
   epoch writes its file and commits it through a real lease (tar, hash,
   HTTP upload, stored in the server's artifact store), as a worker does.
   The overhead is the time spent writing and committing, per epoch, as a
   share of the epoch time. The wall-clock difference of the two runs is
   printed too (on a shared 2-core machine it is noisier than the cost itself).
2. Resume. A study of one trial on worker A (SIGKILLed after two epochs of
   eight on 20k images) with worker B idle beside it: the time from the
   SIGKILL until B trains the trial again from its checkpoint, and the lease
   expiry inside it (TTL 3 s, reaper every 0.5 s, B polls every 0.5 s).
3. Identity. The killed and resumed trial against an uninterrupted twin (same
   seed, same parameters): every epoch's figures and the final value.

The last three lines are exactly ``checkpoint_overhead: <percent>%``,
``resume_s: <seconds>`` and ``resume_identical: yes|no``.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import httpx  # noqa: E402
from _fleet import Fleet  # noqa: E402

from hpo.checkpoints import CheckpointFolder  # noqa: E402
from hpo.client import Client  # noqa: E402
from hpo.protocol import LeaseRequest, WorkerRegistration  # noqa: E402
from hpo.settings import TrainConfig  # noqa: E402
from workers import checkpoint as ckpt  # noqa: E402
from workers.data import load_mnist  # noqa: E402
from workers.trainer import train  # noqa: E402

RESUME_ENV = {
    "HPO_LEASE_TTL_S": "3",
    "HPO_HEARTBEAT_INTERVAL_S": "1",
    "HPO_REAPER_INTERVAL_S": "0.5",
}
FIGURES = ("val_accuracy", "val_loss", "train_loss", "grad_norm", "lr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    p.add_argument("--epochs", type=int, default=3, help="epochs per overhead run")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each; medians")
    p.add_argument("--output", default=None, help="also write the results here (markdown)")
    return p.parse_args(argv)


class Committing:
    """Trainer hooks that commit the checkpoint folder at each epoch end, as hpo.Trial does."""

    def __init__(self, folder: CheckpointFolder | None) -> None:
        self.folder, self.commit_s, self.epoch_s = folder, 0.0, []

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.epoch_s.append(metrics["epoch_time_s"])
        if self.folder is not None:
            t0 = time.perf_counter()
            assert self.folder.commit(epoch), "the checkpoint was not stored"
            self.commit_s += time.perf_counter() - t0
        return True

    def should_stop(self) -> bool:
        return False


def timed_saves() -> list[float]:
    """Time every checkpoint write of the trainer (wraps workers.checkpoint.save)."""
    spent: list[float] = []
    save = ckpt.save

    def timed(*args: Any) -> None:
        t0 = time.perf_counter()
        save(*args)
        spent.append(time.perf_counter() - t0)

    ckpt.save = timed  # type: ignore[assignment]
    return spent


def overhead(fleet: Fleet, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Median per-epoch checkpoint cost (write + commit) over the epoch time, and the walls."""
    admin = _admin(fleet)
    spec = {
        "name": "overhead",
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 2e-3}},
        "fixed": {"optimizer": "adam"},
        "budget": {"max_trials": 100},
    }
    admin.post("/studies", json=spec).raise_for_status()
    client = Client(fleet.url, token=fleet.tokens["worker"])
    worker = client.register(WorkerRegistration(hostname="bench")).worker_id
    config = TrainConfig.from_settings({"optimizer": "adam", "lr": 1e-3, "epochs": args.epochs})
    saves, rows = timed_saves(), []
    for repeat in range(args.repeats):
        for with_checkpoints in (False, True) if repeat % 2 == 0 else (True, False):
            rows.append(_one_run(client, worker, data, config, with_checkpoints, saves))
            print(
                f"  repeat {repeat + 1} checkpoints={with_checkpoints}: {rows[-1]['wall_s']:.2f} s",
                flush=True,
            )
    on = [r for r in rows if r["checkpoints"]]
    off = [r for r in rows if not r["checkpoints"]]
    cost = statistics.median(r["cost_s"] / r["epochs"] for r in on)
    epoch = statistics.median(e for r in on + off for e in r["epoch_s"])
    wall_on = statistics.median(r["wall_s"] for r in on)
    wall_off = statistics.median(r["wall_s"] for r in off)
    return {
        "cost_s": cost,
        "epoch_s": epoch,
        "percent": 100 * cost / epoch,
        "wall_on": wall_on,
        "wall_off": wall_off,
        "size": on[-1]["size"],
        "wall_percent": 100 * (wall_on - wall_off) / wall_off,
    }


def _one_run(
    client: Client, worker: str, data: Any, config: TrainConfig, on: bool, saves: list[float]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        folder, path = None, None
        if on:
            [spec] = client.lease(LeaseRequest(worker_id=worker, studies=["overhead"])).trials
            folder = CheckpointFolder(client, spec.lease_id, Path(tmp), "bench")
            path = Path(tmp) / ckpt.FILENAME
        hooks, before = Committing(folder), len(saves)
        t0 = time.perf_counter()
        train(config, data, "cpu", hooks, checkpoint=path)
        wall = time.perf_counter() - t0
        size = path.stat().st_size if path else 0
    write_s = sum(saves[before:])
    return {
        "checkpoints": on,
        "wall_s": wall,
        "epoch_s": hooks.epoch_s,
        "size": size,
        "cost_s": write_s + hooks.commit_s,
        "epochs": config.epochs,
    }


# --------------------------------------------------------------------------- resume


def resume(workdir: Path, data_dir: str) -> dict[str, Any]:
    """SIGKILL worker A two epochs into the trial; B (idle) resumes it; then the twin."""
    fleet = Fleet(workdir, data_dir)
    fleet.env.update(RESUME_ENV)
    with fleet:
        admin = _admin(fleet)
        spec = {
            "name": "killed",
            "sampler": {"name": "random", "seed": 1},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}},
            "fixed": {"optimizer": "adam", "epochs": 8, "train_subset": 20000, "seed": 3},
            "budget": {"max_trials": 1, "max_concurrent": 1},
        }
        logs = [workdir / f"worker-{n + 1}.log" for n in range(2)]
        for _ in logs:  # both up and idle before there is work: either may take the trial
            fleet.worker("--idle-backoff", "0.5")
        for log in logs:
            _wait(lambda log=log: "registered as worker" in log.read_text(), 120, "the workers")
        admin.post("/studies", json=spec).raise_for_status()
        _wait(lambda: len(_trial(admin, "killed")["intermediate_values"]) >= 2, 300, "2 epochs")
        first = 0 if "leased killed#0" in logs[0].read_text() else 1
        a, b_log = fleet.procs[1 + first], logs[1 - first]
        a.send_signal(signal.SIGKILL)
        killed_at = time.time()
        a.wait()
        line = _wait(lambda: _resume_line(b_log), 120, "worker B resuming")
        resumed_at = _log_time(line)
        _wait(lambda: _trial(admin, "killed")["state"] == "complete", 600, "the resumed trial")
        admin.post("/studies", json={**spec, "name": "twin"}).raise_for_status()
        _wait(lambda: _trial(admin, "twin")["state"] == "complete", 600, "the twin")
        killed, twin = _trial(admin, "killed"), _trial(admin, "twin")
    return {
        "resume_s": resumed_at - killed_at,
        "ttl_s": float(RESUME_ENV["HPO_LEASE_TTL_S"]),
        "from_step": killed["user_attrs"].get("resumed_from_step"),
        "identical": _curve(killed) == _curve(twin) and killed["value"] == twin["value"],
        "value": killed["value"],
        "twin_value": twin["value"],
    }


def _admin(fleet: Fleet) -> httpx.Client:
    auth = {"Authorization": f"Bearer {fleet.tokens['admin']}"}
    return httpx.Client(base_url=fleet.url + "/api/v1", headers=auth)


def _trial(admin: httpx.Client, study: str) -> dict[str, Any]:
    resp = admin.get(f"/studies/{study}/trials/0")
    if resp.status_code == 404:
        return {"intermediate_values": [], "state": "none", "user_attrs": {}}
    resp.raise_for_status()
    return dict(resp.json())


def _curve(detail: dict[str, Any]) -> list[tuple[Any, ...]]:
    last = {m["step"]: tuple(m["metrics"][k] for k in FIGURES) for m in detail["metrics"]}
    return sorted(last.items())


def _resume_line(log: Path) -> str | None:
    found = re.search(r"^(.*) INFO .*resumes from its checkpoint of step.*$", log.read_text(), re.M)
    return found.group(0) if found else None


def _log_time(line: str) -> float:
    stamp = " ".join(line.split()[:2])  # logging's asctime: 2026-12-07 03:40:01,123
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def report(o: dict[str, Any], r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"checkpoint file: {o['size'] / 1e6:.2f} MB (784-512-10 MLP + adam state)",
            f"per epoch: write + commit {1000 * o['cost_s']:.0f} ms, epoch {o['epoch_s']:.2f} s",
            f"wall per run: with {o['wall_on']:.2f} s, without {o['wall_off']:.2f} s "
            f"({o['wall_percent']:+.1f}%)",
            f"resume: from step {r['from_step']}, {r['resume_s']:.2f} s after the SIGKILL, "
            f"of which lease TTL {r['ttl_s']:.0f} s ({r['resume_s'] - r['ttl_s']:.2f} s beyond)",
            f"values: resumed {r['value']}, twin {r['twin_value']}",
            f"checkpoint_overhead: {o['percent']:.2f}%",
            f"resume_s: {r['resume_s']:.2f}",
            f"resume_identical: {'yes' if r['identical'] else 'no'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    data = load_mnist(Path(args.data_dir))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp,
        Fleet(Path(tmp), args.data_dir) as fleet,
    ):
        print("overhead (full MNIST, adam):", flush=True)
        o = overhead(fleet, data, args)
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        print("resume after SIGKILL:", flush=True)
        r = resume(Path(tmp), args.data_dir)
    text = report(o, r)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
