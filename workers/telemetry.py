"""Device utilisation and memory while a trial runs: NVML on NVIDIA GPUs, psutil for the rest.

A :class:`Telemetry` thread samples every ``interval_s`` while a trial runs.
Its latest sample goes out with each heartbeat (the workers page and
``/metrics`` show it live); its summary is stored with the trial when it ends:

    util_mean_pct / util_peak_pct   device busy share (GPU: NVML utilisation; CPU: this
                                    process's CPU use over all cores)
    device_memory_peak_mb           GPU memory in use (NVML; the whole device)
    host_memory_peak_mb             this process's resident memory
    samples                         how many samples the figures are made of

On a machine without NVIDIA's driver (or with ``--device cpu``) NVML is not
used: the figures are the CPU ones and nothing fails. A GPU is found by its
``CUDA_VISIBLE_DEVICES`` entry (an index or a UUID), since NVML numbers every
GPU of the machine while CUDA numbers only the visible ones.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from typing import Any

import psutil

log = logging.getLogger("workers.telemetry")


class DeviceProbe:
    """One sample of the device's utilisation and memory, and of a process tree's CPU use
    and resident memory (this process's by default; a ``--command`` trial's child's)."""

    def __init__(self, device: str) -> None:
        self.process = psutil.Process()
        self.children = False  # a --command child's tree, or this process alone
        self.cores = psutil.cpu_count() or 1
        self._seen: dict[int, float] = {}
        self._cpu_last = (time.monotonic(), self._cpu_seconds())
        self.nvml: Any = None
        self.handle: Any = None
        if device.startswith("cuda"):
            self._open_nvml(device)

    def for_process(self, pid: int) -> DeviceProbe:
        """The same device, watching process ``pid`` and its children."""
        other = copy.copy(self)
        other.process, other.children, other._seen = psutil.Process(pid), True, {}
        other._cpu_last = (time.monotonic(), other._cpu_seconds())
        return other

    def _tree(self) -> list[psutil.Process]:
        try:
            kids = self.process.children(recursive=True) if self.children else []
            return [self.process, *kids]
        except psutil.Error:
            return []

    def _cpu_seconds(self) -> float:
        """CPU seconds used by the watched processes since they were first seen."""
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                used = times.user + times.system
                # A process first seen now counts from now on, not with its whole past.
                start = self._seen.setdefault(proc.pid, used)
                total += used - start
        return total

    def _cpu_pct(self) -> float:
        """CPU use since the last sample, as a share of every core (0..100)."""
        now, seconds = time.monotonic(), self._cpu_seconds()
        then, before = self._cpu_last
        self._cpu_last = (now, seconds)
        busy = (seconds - before) / max(now - then, 1e-6) / self.cores
        return min(100.0, max(0.0, 100.0 * busy))

    def _rss_mb(self) -> float:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / 2**20

    def _open_nvml(self, device: str) -> None:
        import pynvml  # nvidia-ml-py, in the worker extra

        try:
            pynvml.nvmlInit()
            self.handle = _handle(pynvml, device)
            self.nvml = pynvml
        except pynvml.NVMLError as exc:  # no driver, no library: sample the CPU side only
            log.info("NVML unavailable (%s): GPU utilisation is not sampled", exc)

    def sample(self) -> dict[str, float]:
        """The current figures; ``util_pct`` is the device's (GPU, else this process's CPU)."""
        out = {"cpu_pct": self._cpu_pct(), "host_memory_mb": self._rss_mb()}
        out["util_pct"] = out["cpu_pct"]
        if self.nvml is not None:
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
                memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            except self.nvml.NVMLError as exc:
                log.warning("NVML sample failed: %s", exc)
            else:
                out.update(util_pct=float(util.gpu), device_memory_mb=memory.used / 2**20)
        return out


def _handle(pynvml: Any, device: str) -> Any:
    """The NVML handle of ``cuda:N`` (N counts the visible GPUs only)."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [
        v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()
    ]
    physical = visible[index] if index < len(visible) else str(index)
    if physical.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(physical)
    return pynvml.nvmlDeviceGetHandleByIndex(int(physical))


class Telemetry:
    """Samples a :class:`DeviceProbe` in a thread while a trial runs (a context manager)."""

    def __init__(self, probe: DeviceProbe, interval_s: float = 1.0) -> None:
        self.probe, self.interval_s = probe, interval_s
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._latest: dict[str, float] = {}
        self._samples: list[dict[str, float]] = []
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def __enter__(self) -> Telemetry:
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5.0)
        self._record()

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            self._record()

    def _record(self) -> None:
        sample = self.probe.sample()
        with self._lock:
            self._latest = sample
            self._samples.append(sample)

    def latest(self) -> dict[str, float]:
        """The most recent sample (sent with heartbeats)."""
        with self._lock:
            return dict(self._latest)

    def summary(self) -> dict[str, float]:
        """Mean and peak utilisation, peak memories, over the trial (stored with it)."""
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return {}
        util = [s["util_pct"] for s in samples]
        out = {
            "util_mean_pct": sum(util) / len(util),
            "util_peak_pct": max(util),
            "host_memory_peak_mb": max(s["host_memory_mb"] for s in samples),
            "samples": float(len(samples)),
        }
        device = [s["device_memory_mb"] for s in samples if "device_memory_mb" in s]
        if device:
            out["device_memory_peak_mb"] = max(device)
        return out
