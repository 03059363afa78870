"""deploy/systemd: the units pass ``systemd-analyze verify`` and say what issue 16 asks.

``systemd-analyze verify`` loads a unit as systemd would and reports unknown
keys, bad values and specifiers; it needs no running systemd. It also checks
that ExecStart's program exists, so the units are verified from a copy whose
``/opt/hpo/venv/bin/hpo`` points at a stand-in executable. ``systemd-analyze
security --offline=true`` scores the hardening. Both come with Debian's
``systemd`` package; without it those two tests skip, unless
``HPO_REQUIRE_DEPLOY=1`` (or, when that is unset, ``HPO_REQUIRE_COMPOSE=1``,
which CI sets), which makes them fail. The unit contents are parsed and
checked in any case.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.deploy.tools import missing

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
WORKER, SERVER = UNITS / "hpo-worker@.service", UNITS / "hpo-server.service"
HPO = "/opt/hpo/venv/bin/hpo"
MAX_EXPOSURE = {"hpo-worker@0.service": 4.0, "hpo-server.service": 2.5}


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value (keys such as Environment= repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: stray line {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]


def _seconds(value: str) -> float:
    total, units = 0.0, {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze (Debian package systemd)")
    return tool


@pytest.fixture
def verifiable(tmp_path: Path) -> Path:
    """The units, with ExecStart's program replaced by an executable stand-in."""
    stand_in = tmp_path / "bin" / "hpo"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    for unit in (WORKER, SERVER):
        text = unit.read_text()
        assert HPO in text, f"{unit.name}: ExecStart does not use {HPO}"
        (tmp_path / unit.name).write_text(text.replace(HPO, str(stand_in)))
    return tmp_path


def test_systemd_analyze_verify_is_clean(verifiable: Path) -> None:
    tool = _systemd_analyze()
    units = [str(verifiable / "hpo-worker@0.service"), str(verifiable / "hpo-server.service")]
    result = subprocess.run(
        [tool, "verify", *units], capture_output=True, text=True, timeout=60, cwd=verifiable
    )
    # verify exits 0 on unknown keys and unparsable values, but says so on stderr.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_analyze_verify_catches_a_bad_key(verifiable: Path) -> None:
    """Guard: the check above would see a mistake."""
    tool = _systemd_analyze()
    unit = verifiable / "hpo-server.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "sometimes" in result.stderr


@pytest.mark.parametrize("name", sorted(MAX_EXPOSURE))
def test_hardening_score(verifiable: Path, name: str) -> None:
    tool = _systemd_analyze()
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(verifiable / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE[name], result.stdout


def test_worker_template_runs_one_worker_per_gpu() -> None:
    unit = _unit(WORKER)
    service = unit["Service"]
    assert "CUDA_VISIBLE_DEVICES=%i" in service["Environment"]
    assert _one(unit, "Service", "EnvironmentFile") == "/etc/hpo/worker.env"
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[:2] == [HPO, "worker"]
    assert argv[argv.index("--device") + 1] == "cuda:0"  # its only visible GPU
    assert "--token" not in argv and "--gpus" not in argv
    assert "%i" in argv[argv.index("--name") + 1]
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert "2" in _one(unit, "Service", "RestartPreventExitStatus").split()
    # Stopping: SIGTERM to the worker alone, time to give its trial back, then SIGKILL.
    assert _one(unit, "Service", "KillSignal") == "SIGTERM"
    assert _one(unit, "Service", "KillMode") == "mixed"
    assert _seconds(_one(unit, "Service", "TimeoutStopSec")) >= 60
    assert _one(unit, "Service", "SendSIGKILL") == "yes"
    assert "PrivateDevices" not in service or service["PrivateDevices"][-1] == "no", (
        "PrivateDevices hides /dev/nvidia*"
    )
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_worker_stop_outlasts_the_preemption_grace() -> None:
    """SIGTERM, then ``--grace`` seconds to checkpoint the running trials and hand them back
    as preempted: systemd must not SIGKILL before that, nor signal the worker twice."""
    unit = _unit(WORKER)
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert "--grace" in argv, "pass --grace explicitly, so both numbers are in the unit"
    grace = float(argv[argv.index("--grace") + 1])
    assert grace > 0
    stop = _seconds(_one(unit, "Service", "TimeoutStopSec"))
    assert stop > grace, f"TimeoutStopSec={stop} does not outlast --grace {grace}"
    assert stop >= grace + 10, "leave the hand-back and the exit some time"
    assert _one(unit, "Service", "KillSignal") == "SIGTERM"
    # No ExecStop: it would run instead of the signal and eat into TimeoutStopSec.
    assert "ExecStop" not in unit["Service"]


@pytest.mark.parametrize("path", [WORKER, SERVER], ids=lambda p: p.name)
def test_hardening_options(path: Path) -> None:
    unit = _unit(path)
    assert _one(unit, "Service", "User") != "root"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert _one(unit, "Service", key) == value, key


def test_server_unit() -> None:
    unit = _unit(SERVER)
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[:2] == [HPO, "server"]
    assert _one(unit, "Service", "EnvironmentFile") == "/etc/hpo/server.env"
    assert _one(unit, "Service", "Restart") == "on-failure"
    # The bootstrap token file and the working directory are in its StateDirectory.
    state = "/var/lib/" + _one(unit, "Service", "StateDirectory")
    assert _one(unit, "Service", "WorkingDirectory") == state
    assert f"HPO_TOKEN_FILE={state}/hpo-tokens.json" in unit["Service"]["Environment"]


def _hpo_help(*command: str) -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    app: Any = importlib.import_module(scripts["hpo"].partition(":")[0]).app
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_commands_and_environment_files_match_the_cli() -> None:
    worker_help = _hpo_help("worker")
    for flag in re.findall(r"\s(--[a-z-]+)", _one(_unit(WORKER), "Service", "ExecStart")):
        assert flag in worker_help, f"`hpo worker` has no {flag}"
    for line in (UNITS / "worker.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert f"env var: {key}" in worker_help, f"`hpo worker` does not read {key}"
    readme = (ROOT / "README.md").read_text()
    for line in (UNITS / "server.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert f"`{key}`" in readme, f"{key} is not a documented server setting"
