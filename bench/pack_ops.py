"""Benchmark: operators dispatched per trial-step, solo and in fused packs, and the
launch-bound GPU speed-up those counts predict (a prediction, not a GPU measurement).

    python bench/pack_ops.py --data-dir DIR [--device cpu|cuda|auto] [--ks 8,32,128]
                             [--steps 50] [--optimizer NAME] [--sampler-seed 42]
                             [--paths device,cuda] [--launch-us 5,10] [--output FILE.md]

Trials: bench/packs.py's sampling of studies/mnist-optimizers.yaml (RandomSampler,
``--sampler-seed``), keeping the mini-batch ones (gd packs on its own and takes one
step per epoch); ``--optimizer NAME`` keeps only that optimizer's trials. The pack
at K holds the first K of them, so it mixes update rules as a daemon's pack would.

Counting: torch.profiler records each run; every member's batch boundary
(should_stop(), polled before each batch) drops a marker, and the events between
the markers of batches 2 and ``--steps`` + 2 are ``--steps`` optimizer steps of
the whole pack (step 1, with its one-off probes and lazy state, is left out; 50
steps hold 5 gradient-norm steps and, on CUDA, 2 divergence-guard reads, the
steady cadence). The runs stop there (status "stopped"), so no evaluation runs.
The guard's factor is raised so that no member leaves inside the counted steps
(see _lenient). Per step three counts: top-level aten operators (an aten call
not inside another aten call: what Python and autograd dispatch), every profiler
event on the host (nested aten calls, autograd nodes, optimizer and
record_function ranges), and an estimate of the kernels a GPU would launch (leaf
aten calls, an aten call that calls none that compute counting 1; views,
allocations and host reads 0; a foreach or fused optimizer call and a matrix
product 1). On CUDA the runtime's kernel launches are counted
too (measured, not estimated; that path has not been run where this was written).
Per trial-step = per step / K.

Paths: the trainers take device-dependent branches in the step. ``device`` runs
them as the device does. ``cuda`` (on the CPU only) takes CUDA's branches while
running on the CPU, so the counts are those a CUDA run would dispatch: fused
torch.optim for the solo sgd/momentum/nesterov/adam/adamw trials (foreach on the
CPU), every pack product batched (the CPU checks each against the solo call and
goes member by member where the bits differ: workers/packs/linear.py), and the
divergence guard reading the loss every CUDA_GUARD_EVERY batches (every batch on
the CPU). Predictions use the ``cuda`` path where there is one.

Prediction: eager PyTorch spends host time on every dispatched operator (Python,
dispatcher, and for most of them one kernel launch), t_launch ~ 5-10 us each
(``--launch-us``; see LAUNCH_US). When launch-bound, a solo trial-step takes >=
ops_solo x t_launch and a pack trial-step ~ ops_pack_step x t_launch / K, so the
speed-up is ~ K x ops_solo / ops_pack_step (t_launch cancels). The report adds a
rough HBM floor per trial-step: past it the pack is memory-bound, not
launch-bound. The last lines are ``ops per trial-step solo: <n>`` (the largest
pack's members trained one by one), then per K ``ops per trial-step K=<k>: <n>``
and ``predicted launch-bound speedup K=<k>: <x>x``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # workers and bench, when the project is not installed

import workers.packs.linear  # noqa: E402
import workers.trainer  # noqa: E402
from bench._common import publish  # noqa: E402
from bench.packs import SPEC, machine, sample_configs  # noqa: E402
from hpo.settings import TrainConfig  # noqa: E402
from workers.data import MnistData, load_mnist  # noqa: E402
from workers.packs import Member, PackTrainer, optimizer_kind  # noqa: E402
from workers.results import TrainStatus  # noqa: E402
from workers.trainer import CUDA_GUARD_EVERY, train  # noqa: E402

MARK = "pack_ops::batch"
DIVERGENCE_FACTOR = 1e30  # see _lenient

# Host time per kernel launch, low and high (us), and where the figures come from.
LAUNCH_US = (5.0, 10.0)
LAUNCH_SOURCES = (
    "a CUDA kernel launch costs a few us of host time, which a short kernel cannot hide "
    "(NVIDIA, 'Getting Started with CUDA Graphs', developer.nvidia.com/blog/cuda-graphs/; "
    "CUDA C++ Programming Guide, 'CUDA Graphs'); eager PyTorch adds its Python and "
    "dispatcher work to every operator ('Accelerating PyTorch with CUDA Graphs', "
    "pytorch.org/blog/accelerating-pytorch-with-cuda-graphs/). The low figure is about a "
    "bare launch, the high one a launch with eager PyTorch's per-operator overhead; both "
    "are assumptions, not measured here"
)

# aten calls that launch no kernel of their own: views, metadata, allocations, host reads (item:
# a device-to-host copy on CUDA, counted where the copy is), and conversions that return their
# input unchanged unless they call a copying op (to, contiguous, reshape).
_NO_KERNEL = """
    view _unsafe_view _reshape_alias reshape view_as t transpose permute expand expand_as
    as_strided slice select narrow unsqueeze squeeze flatten unflatten split unbind chunk
    diagonal alias detach detach_ lift_fresh empty empty_like empty_strided new_empty
    new_empty_strided resize_ set_ item _local_scalar_dense to contiguous requires_grad_
    result_type is_nonzero size stride numel dim resolve_conj resolve_neg conj _conj _neg_view
"""
NO_KERNEL = frozenset("aten::" + n for n in _NO_KERNEL.split())
# One launch each on CUDA, whatever they call on the CPU: multi-tensor optimizer ops (one launch
# for a few tensors) and matrix products (the CPU's bmm loops over the batch; cuBLAS does not).
ONE_LAUNCH = ("aten::_foreach_", "aten::_fused_")
PRODUCTS = frozenset(f"aten::{n}" for n in ("mm", "addmm", "bmm", "baddbmm", "addbmm", "mv"))
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
COPIES = ("cudaMemcpy", "cudaMemset", "cuMemcpy", "cuMemset")

# Rough fp32 bytes read + written per parameter per member-step on a GPU: forward reads the
# weights (4), backward writes the gradient (4), then the update rule's reads and writes.
UPDATE_BYTES = {
    "sgd": 12,  # p, g -> p
    "momentum": 20,  # p, g, buf -> buf, p
    "nesterov": 24,
    "adagrad": 20,  # p, g, sum -> sum, p
    "rmsprop": 20,
    "rmsprop_momentum": 28,
    "adam": 28,  # p, g, m, v -> m, v, p
    "adamw": 28,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw ($HPO_DATA_DIR)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--ks", default="8,32,128", help="pack sizes, comma-separated")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps counted per run")
    p.add_argument("--optimizer", default=None, help="only this optimizer's trials (not gd)")
    p.add_argument("--sampler-seed", type=int, default=42)
    p.add_argument("--spec", default=str(SPEC), help="study spec whose space is sampled")
    p.add_argument("--paths", default=None, help="device,cuda (default: both on the CPU)")
    p.add_argument(
        "--launch-us",
        default=",".join(f"{t:g}" for t in LAUNCH_US),
        help="host us per kernel launch: low,high",
    )
    p.add_argument("--hbm-tbps", type=float, default=3.35, help="GPU memory bandwidth, TB/s")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--note", default="", help="a line about the machine for the report")
    p.add_argument("--output", default=None, help="also write the report here (markdown)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- trials


def pack_configs(args: argparse.Namespace, n: int, batch: int) -> list[TrainConfig]:
    """The first ``n`` sampled mini-batch trials (of ``--optimizer`` when given), sized so an
    epoch has ``--steps`` + 2 batches."""

    def wanted(c: TrainConfig) -> bool:
        return c.optimizer != "gd" if args.optimizer is None else c.optimizer == args.optimizer

    trials = 2 * n + 16
    while True:
        sampling = argparse.Namespace(
            spec=args.spec,
            epochs=1,
            train_subset=(args.steps + 2) * batch,
            sampler_seed=args.sampler_seed,
            trials=trials,
        )
        configs = [_lenient(c) for c in sample_configs(sampling) if wanted(c)]
        if len(configs) >= n:
            return configs[:n]
        if trials > 64 * n:
            raise SystemExit(f"fewer than {n} trials with optimizer {args.optimizer!r}")
        trials *= 2


def _lenient(config: TrainConfig) -> TrainConfig:
    """The guard's factor raised: a trial whose loss jumps (adagrad at lr ~1) must not leave
    the pack inside the counted steps. The guard still reads the loss (its ops are counted),
    and a NaN or Inf loss still ends the trial (the run then fails)."""
    settings = config.to_dict() | {"divergence_factor": DIVERGENCE_FACTOR}
    return TrainConfig.from_settings(settings, seed=config.seed)


# --------------------------------------------------------------------------- counting


class Marker:
    """Hooks that mark each batch boundary in the profile and stop after ``stop_at`` - 1
    batches (the mark of batch ``stop_at`` closes the last counted step)."""

    def __init__(self, stop_at: int, mark: bool) -> None:
        self.polls, self.stop_at, self.mark = 0, stop_at, mark

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        return True

    def should_stop(self) -> bool:
        self.polls += 1
        if self.mark:
            with record_function(MARK):
                pass
        return self.polls >= self.stop_at


@dataclass
class Counts:
    """Events per optimizer step of the whole run (solo: one trial; pack: K trials)."""

    label: str
    k: int
    kinds: Counter[str]
    aten: float  # top-level aten calls
    events: float  # every profiler event on the host
    kernels: float  # estimated kernel launches
    launches: float | None  # CUDA runtime kernel launches (CUDA only)
    copies: float | None  # CUDA runtime copies and memsets (CUDA only)
    top: list[tuple[str, float]]  # the most frequent top-level aten calls per step
    wall_s: float

    def per_trial(self, value: float) -> float:
        return value / self.k


def count_steps(prof: Any, steps: int) -> dict[str, Any]:
    """Events in [mark of batch 2, mark of batch steps + 2): ``steps`` optimizer steps."""
    events = list(prof.events())
    marks = sorted(e.time_range.start for e in events if e.name == MARK)
    if len(marks) < steps + 2:
        raise RuntimeError(f"{len(marks)} batch marks, need {steps + 2}: did a trial diverge?")
    lo, hi = marks[1], marks[steps + 1]
    inside = [
        e
        for e in events
        if lo <= e.time_range.start < hi and e.name != MARK and _on_host(e) and e.name
    ]
    top = [e for e in inside if e.name.startswith("aten::") and not _under_aten(e)]
    names = Counter(e.name for e in top)
    launches = sum(e.name.startswith(LAUNCHES) for e in inside)
    if not launches:  # no runtime events recorded: the kernels linked to the host ops
        launches = sum(len(getattr(e, "kernels", None) or ()) for e in inside)
    copies = sum(e.name.startswith(COPIES) for e in inside)
    return dict(
        aten=len(top) / steps,
        events=len(inside) / steps,
        kernels=sum(_kernels(e) for e in top) / steps,
        launches=launches / steps,
        copies=copies / steps,
        top=[(n, c / steps) for n, c in names.most_common(12)],
    )


def _on_host(e: Any) -> bool:
    return str(getattr(e, "device_type", "CPU")).endswith("CPU")


def _under_aten(e: Any) -> bool:
    parent = e.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def _kernels(e: Any) -> int:
    """Estimated kernel launches of one aten call on a GPU (see the module docstring)."""
    if e.name.startswith(ONE_LAUNCH) or e.name in PRODUCTS:
        return 1
    inner = sum(_kernels(c) for c in e.cpu_children if c.name.startswith("aten::"))
    if e.name in NO_KERNEL:
        return inner  # a view is 0; reshape or to may copy (a clone, a _to_copy inside)
    return max(1, inner)  # it computes itself (index_select allocates, then fills) or its parts do


@contextmanager
def profiled(device: torch.device) -> Iterator[Any]:
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        yield prof
        if device.type == "cuda":
            torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- CUDA's branches


@contextmanager
def cuda_branches(on: bool) -> Iterator[None]:
    """While ``on``: the step's CUDA branches on the CPU (fused optimizers, batched products,
    the sparse divergence guard). Restored on exit."""
    if not on:
        yield
        return
    make, create = workers.trainer.make_optimizer, workers.trainer.Loop.create
    is_solo = workers.packs.linear.batched_is_solo

    def fused_make(config: TrainConfig, model: Any, device: Any = "cpu") -> Any:
        return make(config, model, "cuda")  # fused=True where CUDA gets it; CPU kernels exist

    def sparse_guard(*a: Any, **kw: Any) -> Any:
        loop = create(*a, **kw)
        loop.guard.every = CUDA_GUARD_EVERY
        return loop

    workers.trainer.make_optimizer = fused_make
    workers.trainer.Loop.create = sparse_guard  # type: ignore[method-assign]
    workers.packs.linear.batched_is_solo = lambda *a: True  # type: ignore[assignment]
    try:
        yield
    finally:
        workers.trainer.make_optimizer = make
        workers.trainer.Loop.create = create  # type: ignore[method-assign]
        workers.packs.linear.batched_is_solo = is_solo


# --------------------------------------------------------------------------- runs


def run_solo(
    config: TrainConfig, data: MnistData, device: torch.device, steps: int
) -> dict[str, Any]:
    t0 = time.perf_counter()
    with profiled(device) as prof:
        result = train(config, data, device, Marker(steps + 2, mark=True))
    if result.status != TrainStatus.STOPPED:
        raise RuntimeError(f"solo {config.optimizer}: {result.status} {result.diagnosis}")
    return count_steps(prof, steps) | {"wall_s": time.perf_counter() - t0}


def run_pack(
    configs: list[TrainConfig], data: MnistData, device: torch.device, steps: int, cuda: bool
) -> dict[str, Any]:
    t0 = time.perf_counter()
    pack = PackTrainer(data, device, capacity=len(configs), snapshots=False)
    if cuda:
        pack.guard_every = CUDA_GUARD_EVERY
    for i, c in enumerate(configs):
        pack.add(Member(i, c, Marker(steps + 2, mark=i == 0)))
    with profiled(device) as prof:
        finished = pack.run_epoch()
    statuses = Counter(r.status for _, r in finished)
    if statuses != Counter({TrainStatus.STOPPED: len(configs)}):
        raise RuntimeError(f"pack K={len(configs)}: {dict(statuses)} (a member left early)")
    return count_steps(prof, steps) | {"wall_s": time.perf_counter() - t0}


def measure(
    args: argparse.Namespace, data: MnistData, device: torch.device, path: str, ks: list[int]
) -> tuple[dict[str, Counts], list[Counts]]:
    """Solo counts per update rule, then a pack at each K, on one path."""
    configs = pack_configs(args, max(ks), batch=64)
    cuda = path == "cuda" and device.type == "cpu"
    solo: dict[str, Counts] = {}
    packs: list[Counts] = []
    with cuda_branches(cuda):
        for c in configs:
            kind = optimizer_kind(c)
            if kind not in solo:
                r = run_solo(c, data, device, args.steps)
                solo[kind] = Counts(f"solo {kind}", 1, Counter([kind]), **r)
                print(f"[{path}] solo {kind}: {r['aten']:.1f} aten ops/step", flush=True)
        for k in ks:
            r = run_pack(configs[:k], data, device, args.steps, cuda)
            kinds = Counter(optimizer_kind(c) for c in configs[:k])
            packs.append(Counts(f"pack K={k}", k, kinds, **r))
            print(f"[{path}] pack K={k}: {r['aten']:.1f} aten ops/step", flush=True)
    return solo, packs


# --------------------------------------------------------------------------- report


def solo_mean(solo: dict[str, Counts], kinds: Counter[str], field: str) -> float:
    """The solo count per trial-step of the pack's own members, trained one by one."""
    total = sum(kinds.values())
    return sum(getattr(solo[kind], field) * n for kind, n in kinds.items()) / total


def memory_floor_us(kinds: Counter[str], hbm_tbps: float, n_params: int) -> float:
    """Rough HBM time per member-step: its weights, gradient and update-rule state."""
    total = sum(kinds.values())
    per_param = sum((8 + UPDATE_BYTES[kind]) * n for kind, n in kinds.items()) / total
    return per_param * n_params / (hbm_tbps * 1e12) * 1e6


def report(
    args: argparse.Namespace,
    results: dict[str, tuple[dict[str, Counts], list[Counts]]],
    device: torch.device,
    load: str,
    elapsed: float,
    command: str,
) -> list[str]:
    launch = [float(x) for x in args.launch_us.split(",")]
    lo_us, hi_us = min(launch), max(launch)
    main_path = "cuda" if "cuda" in results else next(iter(results))
    cuda = device.type == "cuda"
    n_params = 784 * 512 + 512 + 512 * 10 + 10  # the study's fixed 784-512-10 MLP
    now = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"# Operators per trial-step, solo vs fused packs ({args.steps} steps counted per run)",
        "",
        f"Machine: {machine(device)}." + (f" {args.note}" if args.note else ""),
        f"Load average (1/5/15 min) before / after: {load} / {now}. Whole run: {elapsed:.0f} s.",
        f"Command: `{command}`",
        "",
        f"Trials: the mini-batch trials of {Path(args.spec).name}'s space"
        + (f" with optimizer {args.optimizer}" if args.optimizer else "")
        + f", RandomSampler seed {args.sampler_seed}; the pack at K holds the first K.",
        "",
        "**The speed-ups below are predictions from operator counts measured with "
        "torch.profiler"
        + (" on the CPU, not GPU measurements.**" if device.type == "cpu" else ".**"),
        "",
    ]
    for path, (solo, packs) in results.items():
        lines += _path_table(path, solo, packs, device)
    solo, packs = results[main_path]
    lines += [
        f"## Prediction (path `{main_path}`)",
        "",
        f"t_launch = {lo_us:g}-{hi_us:g} us per dispatched operator: {LAUNCH_SOURCES}. "
        "Launch-bound: solo "
        "trial-step >= ops_solo x t_launch, pack trial-step ~ ops_pack_step x t_launch / K, "
        "speed-up ~ K x ops_solo / ops_pack_step (t_launch cancels). It holds only while "
        "the GPU work of a step is shorter than its launches: the last column is a rough "
        f"HBM floor per trial-step at {args.hbm_tbps:g} TB/s (the default: an H100 SXM's "
        "HBM3 per NVIDIA's datasheet; fp32 weights, gradient and update-rule state read "
        "and written once per step; the matrix products, ~0.1 GFLOP per trial-step, take "
        "a fraction of a us at TF32 rates); where it exceeds the pack's launch floor the pack is "
        "memory-bound and gains less than predicted.",
        "",
        "| K | solo ops / trial-step | pack ops / step | pack ops / trial-step "
        "| predicted speed-up (aten) | predicted speed-up (est. kernels) "
        + ("| predicted speed-up (CUDA launches) " if cuda else "")
        + f"| solo floor us ({lo_us:g}-{hi_us:g}) | pack floor us | HBM floor us / trial-step |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""),
    ]
    for p in packs:
        s_aten = solo_mean(solo, p.kinds, "aten")
        s_kern = solo_mean(solo, p.kinds, "kernels")
        s_launch = solo_mean(solo, p.kinds, "launches") if cuda else 0.0
        measured = f"| {p.k * s_launch / max(p.launches or 0, 1e-9):.1f}x " if cuda else ""
        lines.append(
            f"| {p.k} | {s_aten:.1f} | {p.aten:.1f} | {p.per_trial(p.aten):.2f} "
            f"| {p.k * s_aten / p.aten:.1f}x | {p.k * s_kern / p.kernels:.1f}x {measured}"
            f"| {s_aten * lo_us:.0f}-{s_aten * hi_us:.0f} "
            f"| {p.per_trial(p.aten) * lo_us:.1f}-{p.per_trial(p.aten) * hi_us:.1f} "
            f"| {memory_floor_us(p.kinds, args.hbm_tbps, n_params):.1f} |"
        )
    widest = max(packs, key=lambda p: p.k)  # its members include every smaller pack's
    s_lo = solo_mean(solo, widest.kinds, "aten") * lo_us
    s_hi = solo_mean(solo, widest.kinds, "aten") * hi_us
    floor = memory_floor_us(widest.kinds, args.hbm_tbps, n_params)
    lines += [
        "",
        "Pack operators per step follow the update rules present ("
        + "; ".join(f"K={p.k}: {len(p.kinds)} rules, {p.aten:.0f} ops" for p in packs)
        + f"), not K. With ~{widest.aten:.0f} ops per pack step and the rough HBM floor of "
        f"~{floor:.1f} us per trial-step, a pack stops being launch-bound near "
        f"K = {widest.aten * lo_us / floor:.0f} (at {lo_us:g} us) to "
        f"{widest.aten * hi_us / floor:.0f} (at {hi_us:g} us); past that the speed-up "
        f"levels off near solo floor / HBM floor = {s_lo / floor:.0f}-{s_hi / floor:.0f}x.",
        "",
    ]
    lines.append(f"ops per trial-step solo: {solo_mean(solo, widest.kinds, 'aten'):.1f}")
    for p in packs:
        lines.append(f"ops per trial-step K={p.k}: {p.per_trial(p.aten):.2f}")
    for p in packs:
        speedup = p.k * solo_mean(solo, p.kinds, "aten") / p.aten
        lines.append(f"predicted launch-bound speedup K={p.k}: {speedup:.1f}x")
    return lines


def _path_table(
    path: str, solo: dict[str, Counts], packs: list[Counts], device: torch.device
) -> list[str]:
    cuda = device.type == "cuda"
    about = {
        "device": f"the {device.type.upper()} branches, as run",
        "cuda": "CUDA's branches taken on the CPU (fused optimizers, batched products, "
        "guard every 25 batches)",
    }[path]
    lines = [
        f"## Counts per optimizer step, path `{path}`: {about}",
        "",
        "| run | members by update rule | top-level aten / step | all events / step "
        "| est. kernels / step | "
        + ("CUDA launches / step | CUDA copies / step | " if cuda else "")
        + "aten / trial-step | est. kernels / trial-step | wall s |",
        "|---|---|---:|---:|---:|" + ("---:|---:|" if cuda else "") + "---:|---:|---:|",
    ]
    for c in [*solo.values(), *packs]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(c.kinds.items()))
        cells = [c.label, kinds, f"{c.aten:.1f}", f"{c.events:.1f}", f"{c.kernels:.1f}"]
        if cuda:
            cells += [f"{c.launches or 0:.1f}", f"{c.copies or 0:.1f}"]
        cells += [f"{c.per_trial(c.aten):.2f}", f"{c.per_trial(c.kernels):.2f}", f"{c.wall_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Most frequent top-level aten calls per step:", ""]
    for c in [next(iter(solo.values())), *packs]:
        top = ", ".join(f"{n.removeprefix('aten::')} {v:g}" for n, v in c.top)
        lines.append(f"- {c.label}: {top}")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.optimizer == "gd":
        raise SystemExit("gd takes one step per epoch in chunks: not counted here")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    paths = (args.paths or ("device,cuda" if device.type == "cpu" else "device")).split(",")
    if device.type == "cuda" and "cuda" in paths:
        paths = ["device"]  # on CUDA the device's branches are CUDA's
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data = load_mnist(args.data_dir, device)
    ks = [int(k) for k in args.ks.split(",") if k]
    results = {path: measure(args, data, device, path, ks) for path in paths}
    command = shlex.join(["python", "bench/pack_ops.py", *(sys.argv[1:] if argv is None else argv)])
    lines = report(args, results, device, load, time.perf_counter() - started, command)
    publish("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
