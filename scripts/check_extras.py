"""Each extra installs and works on its own, in a clean virtual environment (CI runs this).

    python3 scripts/check_extras.py [--workdir DIR] [--data-dir DIR]

* ``[server]`` alone (no torch): ``hpo server`` starts, serves the dashboard's
  sign-in page, and for every sampler the spec accepts leases trials beyond the
  sampler's start-up trials; a sampler it cannot run (``gp`` without torch) is
  refused at creation with a 422 that says why.
* ``[worker]`` alone (no fastapi, sqlalchemy, optuna): ``hpo worker`` trains one
  reference trial on real MNIST against that server.

Exit status 0 when everything works; otherwise the first problem, and 1. A
missing dependency in an extra therefore fails CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_CHECK = ROOT / "scripts" / "extras" / "server_check.py"


def _source(workdir: Path) -> Path:
    """A copy of the checkout to install from (a build writes build/ beside the sources)."""
    copy = workdir / "source"
    if not copy.exists():
        skip = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__")
        shutil.copytree(ROOT, copy, ignore=skip)
    return copy


def _venv(where: Path, extra: str) -> Path:
    """A fresh venv with ``hpo-service[extra]`` installed from this checkout; its python."""
    print(f"check-extras: [{extra}] alone in {where}", flush=True)
    venv.create(where, with_pip=True, clear=True)
    python = where / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _run([python, "-m", "pip", "install", "-q", f"{_source(where.parent)}[{extra}]"])
    return python


def _run(argv: list, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        sys.exit(
            f"check-extras: {' '.join(map(str, argv))} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def _absent(python: Path, modules: list[str]) -> None:
    """Fail unless none of ``modules`` imports in ``python`` (the extra really is alone)."""
    code = (
        "import importlib.util, sys\n"
        "sys.exit(any(importlib.util.find_spec(m) for m in sys.argv[1:]))"
    )
    if subprocess.run([str(python), "-c", code, *modules]).returncode != 0:
        sys.exit(f"check-extras: {python} has one of {modules}: not a clean venv")


WAIT_READY = """
import sys, time
import httpx
for _ in range(600):
    try:
        httpx.get(sys.argv[1] + "/healthz")
        break
    except httpx.HTTPError:
        time.sleep(0.1)
"""


def _server(python: Path, workdir: Path) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(
        HPO_DATABASE_URL=f"sqlite:///{workdir / 'hpo.db'}",
        HPO_TOKEN_FILE=str(workdir / "tokens.json"),
    )
    port = 18000 + os.getpid() % 1000
    hpo = python.parent / "hpo"
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [hpo, "server", "--port", str(port)], env=env, stdout=log, stderr=log, text=True
    )
    url = f"http://127.0.0.1:{port}"
    _run([python, "-c", WAIT_READY, url])
    return proc, url, json.loads((workdir / "tokens.json").read_text())


def _worker_trains(python: Path, url: str, tokens: dict[str, str], data_dir: str) -> None:
    hpo = python.parent / "hpo"
    spec = {
        "name": "worker-extra",
        "sampler": {"name": "random", "seed": 1},
        "budget": {"max_trials": 1},
        "fixed": {"epochs": 1, "train_subset": 500},
        "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
    }
    spec_file = Path(tempfile.mkdtemp()) / "spec.yaml"
    spec_file.write_text(json.dumps(spec))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    _run([hpo, "study", "create", spec_file, "--server", url, "--token", tokens["admin"]], env=env)
    _run(
        [
            hpo,
            "worker",
            "--server",
            url,
            "--token",
            tokens["worker"],
            "--device",
            "cpu",
            "--data-dir",
            data_dir,
            "--max-trials",
            "1",
            "--studies",
            "worker-extra",
        ],
        env=env,
        timeout=600,
    )
    shown = _run(
        [
            hpo,
            "study",
            "show",
            "worker-extra",
            "--format",
            "json",
            "--server",
            url,
            "--token",
            tokens["admin"],
        ],
        env=env,
    )
    counts = json.loads(shown.stdout)["counts"]
    if counts["complete"] != 1:
        sys.exit(f"check-extras: the worker extra did not complete its trial: {counts}")
    print("check-extras: [worker] alone trained one trial", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--data-dir", default=os.environ.get("HPO_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hpo-extras-"))
    started = time.monotonic()
    server_py = _venv(workdir / "server-venv", "server")
    _absent(server_py, ["torch", "torchvision"])
    proc, url, tokens = _server(server_py, workdir)
    try:
        checked = _run(
            [server_py, SERVER_CHECK, url, tokens["admin"], tokens["worker"]], timeout=900
        )
        print(checked.stdout, end="", flush=True)
        print("check-extras: [server] alone serves the dashboard and every sampler", flush=True)
        worker_py = _venv(workdir / "worker-venv", "worker")
        _absent(worker_py, ["fastapi", "sqlalchemy", "optuna", "alembic"])
        _worker_trains(worker_py, url, tokens, args.data_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"check-extras: ok in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
