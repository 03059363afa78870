"""Per-GPU supervisor, device selection and the ``hpo worker`` command line.

There is no GPU on the build machine: CUDA is mocked where device logic is
checked (torch.cuda.is_available / device_count), and the supervisor runs small
stand-in child processes instead of GPU workers, so restart and signal
forwarding are tested with real processes but without CUDA.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from workers import cli
from workers.cli import app, options_from_env
from workers.devices import DeviceError, gpu_groups, plan_gpus, resolve_device
from workers.options import OPTIONS_ENV, ExitCode, WorkerOptions
from workers.supervisor import Supervisor, child_command

OPTS = WorkerOptions(server="http://hpo:8000", token="tok-123", device="cuda")


# --------------------------------------------------------------------------- device plans


def test_plan_gpus_single_process_cases() -> None:
    assert plan_gpus(None, "cuda", lambda: 4) == []
    assert plan_gpus("all", "cpu", lambda: 4) == []  # cpu ignores --gpus
    assert plan_gpus("all", "auto", lambda: None) == []  # no CUDA: one cpu process


def test_plan_gpus_all_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert plan_gpus("all", "cuda", lambda: 3) == [(0, "0"), (1, "1"), (2, "2")]
    assert plan_gpus("2, 0,2", "auto", lambda: 3) == [(2, "2"), (0, "0")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # indices map onto what we may see
    assert plan_gpus("all", "cuda", lambda: 2) == [(0, "4"), (1, "6")]
    assert plan_gpus("1", "cuda", lambda: 2) == [(1, "6")]


@pytest.mark.parametrize(
    ("gpus", "device", "count"),
    [("0,5", "cuda", 2), ("x", "cuda", 2), ("all", "cuda:1", 2), ("all", "cuda", None)],
)
def test_plan_gpus_rejects_impossible_requests(gpus: str, device: str, count: Any) -> None:
    with pytest.raises(DeviceError):
        plan_gpus(gpus, device, lambda: count)


def test_gpu_groups_for_trials_over_several_gpus() -> None:
    plan = [(0, "0"), (1, "1"), (2, "2"), (3, "3"), (4, "4")]
    assert gpu_groups(plan, 1) == ["0", "1", "2", "3", "4"]
    assert gpu_groups(plan, 2) == ["0,1", "2,3"]  # the fifth GPU is left unused
    assert gpu_groups([], 2) == []  # no --gpus: one process on --device
    with pytest.raises(DeviceError, match="gpus-per-trial 8"):
        gpu_groups(plan, 8)


def _assert_resolves(answers: dict[str, str], refusals: dict[str, str]) -> None:
    """``resolve_device(asked)`` gives each answer, and refuses each refusal's asked
    device with a DeviceError matching its message."""
    for asked, device in answers.items():
        assert resolve_device(asked) == device, asked
    for asked, message in refusals.items():
        with pytest.raises(DeviceError, match=message):
            resolve_device(asked)


def test_resolve_device_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    _assert_resolves(
        {"cpu": "cpu", "auto": "cpu"}, {"cuda": "not available", "tpu": "unknown device"}
    )


def test_resolve_device_with_mocked_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _assert_resolves(
        {"auto": "cuda:0", "CUDA": "cuda:0", "cuda:1": "cuda:1"},
        {"cuda:2": "does not exist", "cuda:one": "expected cuda:N"},
    )


def test_child_command_pins_the_gpu_and_keeps_the_token_off_argv() -> None:
    options = WorkerOptions(
        server="http://hpo:8000",
        token="tok-123",
        device="cuda",
        gpus="all",
        studies=["a", "b"],
        max_trials=3,
        data_dir="data",
        name="box",
    )
    argv, env = child_command(options, "3")
    assert argv == [sys.executable, "-m", "workers"]
    assert env["HPO_TOKEN"] == "tok-123" and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert "tok-123" not in env[OPTIONS_ENV]  # the token only in HPO_TOKEN
    monkeypatch_env = {OPTIONS_ENV: env[OPTIONS_ENV], "HPO_TOKEN": env["HPO_TOKEN"]}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in monkeypatch_env.items():
            mp.setenv(key, value)
        child = options_from_env()
    assert child is not None
    assert child.device == "cuda:0" and child.gpus is None  # a child never supervises
    assert child.studies == ["a", "b"] and child.max_trials == 3
    assert child.name == "box:gpu3" and child.token == "tok-123"
    assert child.data_dir == "data" and child.server == options.server


# --------------------------------------------------------------------------- supervisor


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


CRASH_TWICE = """
import pathlib, sys
p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1)); sys.exit(1 if n < 2 else 0)
"""
SLEEP_ON_TERM = """
import pathlib, signal, sys, time
def bye(*a):
    pathlib.Path(sys.argv[1]).write_text('term'); sys.exit(0)
signal.signal(signal.SIGTERM, bye)
pathlib.Path(sys.argv[1] + '.up').write_text('up')
time.sleep(60)
"""


def test_crashing_child_is_restarted_without_touching_the_others(tmp_path: Path) -> None:
    def command(options: WorkerOptions, gpu: str) -> tuple[list[str], dict[str, str]]:
        code = CRASH_TWICE if gpu == "0" else "import time; time.sleep(1.5)"
        return _python(code) + [str(tmp_path / f"gpu{gpu}")], {}

    sup = Supervisor(
        OPTS, ["0", "1"], command=command, backoff_s=0.05, poll_s=0.02, install_signals=False
    )
    assert sup.run() == 0
    crashy, steady = sup.children
    assert (tmp_path / "gpu0").read_text() == "3"  # crashed twice, third run exited 0
    assert crashy.restarts == 2 and crashy.exit_code == 0
    assert steady.restarts == 0 and steady.exit_code == 0


def test_supervisor_gives_up_after_bounded_restarts(tmp_path: Path) -> None:
    def command(options: WorkerOptions, gpu: str) -> tuple[list[str], dict[str, str]]:
        return _python("import sys; sys.exit(7)"), {}

    sup = Supervisor(
        OPTS,
        ["0"],
        command=command,
        max_restarts=2,
        backoff_s=0.01,
        poll_s=0.02,
        install_signals=False,
    )
    assert sup.run() == ExitCode.ERROR
    assert sup.children[0].gave_up and sup.children[0].restarts == 3


def test_configuration_error_is_not_restarted() -> None:
    def command(options: WorkerOptions, gpu: str) -> tuple[list[str], dict[str, str]]:
        return _python(f"import sys; sys.exit({ExitCode.CONFIG})"), {}

    sup = Supervisor(OPTS, ["0"], command=command, poll_s=0.02, install_signals=False)
    assert sup.run() == ExitCode.CONFIG
    assert sup.children[0].restarts == 0


def test_shutdown_is_forwarded_to_every_child(tmp_path: Path) -> None:
    def command(options: WorkerOptions, gpu: str) -> tuple[list[str], dict[str, str]]:
        return _python(SLEEP_ON_TERM) + [str(tmp_path / f"gpu{gpu}")], {}

    sup = Supervisor(OPTS, ["0", "1"], command=command, poll_s=0.02, install_signals=False)

    def stop_when_up() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            (tmp_path / f"gpu{g}.up").exists() for g in "01"
        ):
            time.sleep(0.02)
        sup.request_shutdown()

    stopper = threading.Thread(target=stop_when_up)
    stopper.start()
    started = time.monotonic()
    assert sup.run() == 0
    stopper.join()
    assert time.monotonic() - started < 30
    assert [(tmp_path / f"gpu{g}").read_text() for g in "01"] == ["term", "term"]


# --------------------------------------------------------------------------- CLI


def test_cli_builds_options_from_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[WorkerOptions] = []
    monkeypatch.setattr(cli, "run", lambda options: seen.append(options) or 0)
    env = {"HPO_SERVER": "http://env:8000", "HPO_TOKEN": "env-token", "HPO_DATA_DIR": "mnist"}
    args = ["--device", "cpu", "--studies", "a, b,", "--max-trials", "2", "--log-level", "debug"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    [options] = seen
    assert options.server == "http://env:8000" and options.token == "env-token"
    assert options.data_dir == "mnist" and options.device == "cpu"
    assert options.studies == ["a", "b"] and options.max_trials == 2
    assert options.log_level == "DEBUG" and options.gpus is None


def test_cli_flags_win_over_env_and_exit_code_is_passed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[WorkerOptions] = []
    monkeypatch.setattr(cli, "run", lambda options: seen.append(options) or 2)
    args = ["--server", "http://flag:1", "--token", "flag-token", "--gpus", "all"]
    result = CliRunner().invoke(app, args, env={"HPO_SERVER": "http://env:8000"})
    assert result.exit_code == 2
    assert seen[0].server == "http://flag:1" and seen[0].token == "flag-token"
    assert seen[0].gpus == "all"


def test_cli_requires_a_server_and_a_known_log_level() -> None:
    runner = CliRunner()
    assert runner.invoke(app, [], env={"HPO_SERVER": ""}).exit_code != 0
    bad = runner.invoke(app, ["--server", "http://x", "--log-level", "loud"])
    assert bad.exit_code != 0


# --------------------------------------------------------------------------- console


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import ui
    from workers.steering import NoProgress

    monkeypatch.setattr(ui, "_is_tty", lambda: False)
    assert isinstance(ui.make_progress(), NoProgress)
    monkeypatch.setattr(ui, "_is_tty", lambda: True)
    bar = ui.make_progress()
    assert isinstance(bar, ui.RichProgress)
    bar.start("study#0", total=3)  # a whole trial's life cycle must not raise
    bar.advance(1, {"val_accuracy": 0.9})
    bar.advance(2, {})
    bar.stop()
