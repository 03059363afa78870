"""docker-compose.yml is validated (no engine runs here) and points at real commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hpo_cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV = {"POSTGRES_PASSWORD": "x", "HPO_WORKER_TOKEN": "y", "MINIO_ROOT_PASSWORD": "z" * 8}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _duration_s(value: str | int) -> float:
    """A Compose duration (``45s``, ``1m30s``, ``1h``) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    text = str(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(entry.split("=", 1) for entry in env)
    return {key: str(value) for key, value in env.items()}


def test_docker_compose_config_validates() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("HPO_REQUIRE_COMPOSE") == "1":
            pytest.fail("docker-compose is required (HPO_REQUIRE_COMPOSE=1) but not installed")
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_services_are_wired_as_documented() -> None:
    services = _compose()["services"]
    assert set(services) == {"db", "minio", "minio-bucket", "server", "worker"}
    assert "healthcheck" in services["db"]
    assert any("pgdata" in v for v in services["db"]["volumes"])
    assert services["server"]["depends_on"]["db"]["condition"] == "service_healthy"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "ports" not in services["worker"], "workers must scale with --scale worker=N"


def test_workers_have_time_to_checkpoint_on_stop() -> None:
    """Preemption: `docker compose stop` sends stop_signal, then SIGKILL after
    stop_grace_period; the worker needs its --grace to checkpoint and hand back."""
    worker = _compose()["services"]["worker"]
    command = worker["command"]
    assert "--grace" in command, "pass --grace explicitly, so both numbers are in the file"
    grace = float(command[command.index("--grace") + 1])
    assert grace > 0
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    period = _duration_s(worker.get("stop_grace_period", "10s"))  # Compose's default: 10 s
    assert period > grace, f"stop_grace_period {period} s does not outlast --grace {grace}"
    assert period >= grace + 10, "leave the hand-back and the exit some time"
    assert worker.get("init") is not True, "SIGTERM must reach the worker (PID 1) itself"


def test_server_keeps_artifacts_in_minio() -> None:
    services = _compose()["services"]
    minio, bucket, server = services["minio"], services["minio-bucket"], services["server"]
    assert minio["image"].split(":")[0] == "minio/minio"
    assert minio["command"][0] == "server"
    assert any(str(v).startswith("miniodata:") for v in minio["volumes"])
    assert "miniodata" in _compose()["volumes"]
    assert "healthcheck" in minio
    # The one-shot creates the bucket the server's store names, once MinIO is up.
    assert bucket["image"].split(":")[0] == "minio/mc"
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    env = _env(server)
    store = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]+)(/[^/]\S*)?", env["HPO_ARTIFACT_STORE"])
    assert store, env["HPO_ARTIFACT_STORE"]
    script = (
        " ".join(bucket["command"]) if isinstance(bucket["command"], list) else bucket["command"]
    )
    assert re.search(rf"mc mb\b.*\S+/{re.escape(store.group(1))}\b", script), script
    assert "http://minio:9000" in script
    assert server["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    # The server reaches MinIO by its service name, as MinIO's root user.
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    minio_env = _env(minio)
    assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert env["AWS_SECRET_ACCESS_KEY"].startswith("${"), "the secret comes from .env"
    assert env.get("AWS_DEFAULT_REGION")
    # .env.example names every variable the file requires.
    example = (ROOT / ".env.example").read_text()
    for name in re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()):
        assert re.search(rf"^{name}=", example, re.M), f".env.example lacks {name}"


def test_no_secret_is_committed() -> None:
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKEN|SECRET_ACCESS_KEY)\s*:", line):
            assert "${" in line, f"secret must come from the env file: {line.strip()}"
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()


def test_dockerfiles_exist_and_copy_real_paths() -> None:
    for name, service in _compose()["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.exists(), f"{name}: {dockerfile.name} missing"
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src} does not exist"


@pytest.mark.parametrize("service", ["server", "worker"])
def test_every_service_command_exists_in_the_project(service: str) -> None:
    command = _compose()["services"][service]["command"]
    assert command[0] == "hpo"
    subcommand, flags = command[1], [a for a in command[2:] if a.startswith("--")]
    help_text = CliRunner().invoke(app, [subcommand, "--help"], terminal_width=200).output
    assert "Usage" in help_text, f"`hpo {subcommand}` is not a command"
    for flag in flags:
        assert flag in help_text, f"`hpo {subcommand}` has no {flag} option"
