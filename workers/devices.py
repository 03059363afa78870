"""Which device this process trains on, and which GPUs get a worker process each.

``resolve_device`` turns ``--device`` into a concrete device (``auto``: cuda:0 when
CUDA is available, else cpu); ``plan_gpus`` turns ``--gpus`` into one (index,
pinned id) pair per worker process. torch is imported only when CUDA matters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from hpo.protocol import Resources

log = logging.getLogger("workers.devices")


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(spec: str) -> str:
    """``auto`` -> ``cuda:0`` if CUDA is available else ``cpu``; validates ``cuda:N``."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda:0" if available else "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not available:
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here")
        index = 0 if spec == "cuda" else _index(spec)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {spec!r} does not exist: {count} CUDA device(s) visible")
        return f"cuda:{index}"
    raise DeviceError(f"unknown device {spec!r}: use cpu, cuda, cuda:N or auto")


def _index(spec: str) -> int:
    try:
        index = int(spec.split(":", 1)[1])
    except ValueError:
        raise DeviceError(f"bad device {spec!r}: expected cuda:N") from None
    if index < 0:
        raise DeviceError(f"bad device {spec!r}: N must be >= 0")
    return index


def resources_for(device: str, gpus_per_trial: int | None = None) -> Resources:
    """What this worker process offers a trial: its GPUs and their memory (none on cpu)."""
    if not device.startswith("cuda"):
        return Resources()
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    return Resources(gpus=gpus_per_trial or 1, gpu_memory_gb=round(props.total_memory / 2**30, 1))


def trial_gpus(device: str, gpus_per_trial: int | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a ``--command`` child: the first ``gpus_per_trial`` GPUs
    this process sees (None: the child inherits this process's devices)."""
    if not gpus_per_trial or not device.startswith("cuda"):
        return None
    import torch

    count = torch.cuda.device_count()
    if gpus_per_trial > count:
        raise DeviceError(f"--gpus-per-trial {gpus_per_trial}: only {count} GPU(s) visible")
    return ",".join(_visible_ids(count)[:gpus_per_trial])


def describe_device(device: str) -> list[str]:
    """Human-readable device list for the registry, e.g. ``cuda:0 NVIDIA H100 (80 GiB)``."""
    if not device.startswith("cuda"):
        return [f"cpu ({os.cpu_count() or 1} cores)"]
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    physical = os.environ.get("CUDA_VISIBLE_DEVICES")
    pinned = f" [CUDA_VISIBLE_DEVICES={physical}]" if physical else ""
    return [f"{device} {props.name} ({props.total_memory / 2**30:.0f} GiB){pinned}"]


#: (local index for ``cuda:N`` in this process, id to pin in the child's CUDA_VISIBLE_DEVICES)
GpuPlan = list[tuple[int, str]]


def _torch_cuda_count() -> int | None:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else None


def plan_gpus(
    gpus: str | None, device: str, cuda_count: Callable[[], int | None] = _torch_cuda_count
) -> GpuPlan:
    """The GPUs to run on: empty for one process on ``device``; else (index, pinned id) pairs.

    ``gpus`` is ``"all"`` or comma-separated indices into the GPUs this process
    sees (``CUDA_VISIBLE_DEVICES`` respected). It needs device ``cuda`` or
    ``auto`` (``auto`` without CUDA falls back to one CPU process).
    """
    if not gpus or not gpus.strip():
        return []
    dev = (device or "auto").strip().lower()
    if dev == "cpu":
        log.warning("--gpus %s ignored with --device cpu", gpus)
        return []
    if dev not in ("cuda", "auto"):
        raise DeviceError(f"--gpus needs --device cuda or auto, not {device!r}")
    count = cuda_count()
    if not count:
        if dev == "auto":
            log.warning("--gpus %s: CUDA not available, running one process on cpu", gpus)
            return []
        raise DeviceError(f"--gpus {gpus}: CUDA is not available here")
    visible = _visible_ids(count)
    if gpus.strip().lower() == "all":
        return list(enumerate(visible))
    plan: GpuPlan = []
    for token in (t.strip() for t in gpus.split(",")):
        if not token:
            continue
        if not token.isdigit() or int(token) >= count:
            raise DeviceError(f"--gpus {gpus}: no GPU {token!r} (visible: 0..{count - 1})")
        if int(token) not in [i for i, _ in plan]:
            plan.append((int(token), visible[int(token)]))
    return plan


def gpu_groups(plan: GpuPlan, per_process: int) -> list[str]:
    """The planned GPUs in groups of ``per_process`` (``CUDA_VISIBLE_DEVICES`` values).

    ``--gpus-per-trial 2`` on four GPUs gives ``["0,1", "2,3"]``: one worker process
    each, whose trials see both. GPUs left over (fewer than a group) stay unused.
    """
    ids = [gpu for _, gpu in plan]
    if ids and per_process > len(ids):
        raise DeviceError(f"--gpus-per-trial {per_process}: only {len(ids)} GPU(s) planned")
    return [
        ",".join(ids[i : i + per_process])
        for i in range(0, len(ids) - per_process + 1, per_process)
    ]


def _visible_ids(count: int) -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        ids = [t.strip() for t in env.split(",") if t.strip()]
        if len(ids) >= count:
            return ids[:count]
    return [str(i) for i in range(count)]
