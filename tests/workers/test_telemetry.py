"""Device telemetry while a trial runs: psutil on the CPU (real), NVML on NVIDIA GPUs.

There is no GPU (and no NVIDIA driver) on the build machine: the real NVML
library is absent, which is exactly the case that must be handled without
errors; NVML's *present* path is checked with a stand-in ``pynvml`` module
(mocked only because no GPU exists here, and said so).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from typing import Any

import pytest

from workers import telemetry
from workers.telemetry import DeviceProbe, Telemetry


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def test_cpu_figures_are_measured_while_a_trial_runs() -> None:
    with Telemetry(DeviceProbe("cpu"), interval_s=0.1) as sampler:
        _burn(0.6)
        live = sampler.latest()
    summary = sampler.summary()
    assert set(live) == {"cpu_pct", "host_memory_mb", "util_pct"}
    assert 0 < summary["util_peak_pct"] <= 100 and summary["util_mean_pct"] > 0
    assert summary["host_memory_peak_mb"] > 10 and summary["samples"] >= 4
    assert "device_memory_peak_mb" not in summary


def test_an_idle_process_reads_near_zero() -> None:
    with Telemetry(DeviceProbe("cpu"), interval_s=0.1) as sampler:
        time.sleep(0.5)
    assert sampler.summary()["util_mean_pct"] < 25  # sleeping, not burning


def test_a_command_child_tree_is_watched_not_the_worker() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.monotonic()\nwhile time.monotonic() - t < 1.5: pass",
        ]
    )
    try:
        probe = DeviceProbe("cpu")
        with Telemetry(probe.for_process(child.pid), 0.1) as kid, Telemetry(probe, 0.1) as me:
            time.sleep(1.0)  # the worker itself idles meanwhile
        busy, idle = kid.summary()["util_mean_pct"], me.summary()["util_mean_pct"]
        assert busy > 5 and busy > 3 * idle, (busy, idle)  # the child burns, the worker waits
    finally:
        child.wait(timeout=10)


def test_no_nvidia_driver_is_handled_without_errors() -> None:
    probe = DeviceProbe("cuda:0")  # the real NVML library is not on this machine
    assert probe.nvml is None
    sample = probe.sample()
    assert "device_memory_mb" not in sample and sample["util_pct"] == sample["cpu_pct"]


class _FakeNvml(types.SimpleNamespace):
    """A stand-in pynvml (no GPU here): records which GPU was asked for."""

    class NVMLError(Exception):
        """The error pynvml raises; the probe must catch it."""

    def __init__(self) -> None:
        super().__init__(asked=[])

    def nvmlInit(self) -> None:  # pynvml's names
        return None

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self.asked.append(index)
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.asked.append(uuid)
        return uuid

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        return types.SimpleNamespace(gpu=37)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        return types.SimpleNamespace(used=3 * 2**30)


@pytest.mark.parametrize(
    ("visible", "device", "expected"),
    [("3,5", "cuda:1", 5), ("", "cuda:0", 0), ("GPU-abc,GPU-def", "cuda:1", "GPU-def")],
)
def test_nvml_reads_the_gpu_cuda_sees(
    monkeypatch: pytest.MonkeyPatch, visible: str, device: str, expected: Any
) -> None:
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    probe = DeviceProbe(device)
    sample = probe.sample()
    assert fake.asked == [expected]
    assert sample["util_pct"] == 37.0 and sample["device_memory_mb"] == 3072.0


def test_a_failing_nvml_sample_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml()

    def broken(handle: str) -> Any:
        raise fake.NVMLError("GPU is lost")

    fake.nvmlDeviceGetUtilizationRates = broken
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sample = DeviceProbe("cuda:0").sample()
    assert sample["util_pct"] == sample["cpu_pct"] and "device_memory_mb" not in sample


def test_samples_are_taken_on_a_thread_and_stop_with_the_trial() -> None:
    with Telemetry(DeviceProbe("cpu"), interval_s=0.05) as sampler:
        time.sleep(0.3)
    count = sampler.summary()["samples"]
    time.sleep(0.2)
    assert sampler.summary()["samples"] == count  # nothing sampled after the trial
    assert not [t for t in threading.enumerate() if t.name == "telemetry"]
    assert telemetry.log.name == "workers.telemetry"
