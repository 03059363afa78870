"""The one-command demo: server + workers + the quick study, on embedded SQLite.

    make demo                      # leaves the server up until Ctrl-C
    make demo DEMO_ARGS=--exit     # for scripts: exit once the study is done

Starts ``hpo server`` on a SQLite file in a work folder, submits
``studies/quick.yaml``, starts two CPU workers (or one per GPU), shows
progress, then prints the best validation accuracy per optimizer with its
learning rate and the dashboard URL.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

import hpo
import hpo.schemas
from hpo.transport import ApiError

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="exit when the study is done")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: auto)")
    parser.add_argument("--data-dir", default=os.environ.get("HPO_DATA_DIR", "data"))
    parser.add_argument("--workdir", default=".demo", help="SQLite file, tokens and logs")
    parser.add_argument("--spec", default=str(ROOT / "studies" / "quick.yaml"))
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (seconds)")
    return parser.parse_args()


def _check_mnist(data_dir: Path) -> None:
    """Fail at once, before starting anything, when MNIST is not there."""
    code = (
        "import sys; from workers.data import load_mnist, MnistNotFound\n"
        "try: load_mnist(sys.argv[1], 'cpu')\n"
        "except MnistNotFound as e: print(e, file=sys.stderr); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(data_dir)], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(result.returncode)


def _start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HPO_DATABASE_URL": f"sqlite:///{workdir / 'hpo.db'}",
        "HPO_TOKEN_FILE": str(workdir / "hpo-tokens.json"),
    }
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
    cmd = [sys.executable, "-m", "service.cli", "server", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("demo: the server exited; see its log in the work folder")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"demo: server at {url} not ready after {timeout:.0f} s")


def _gpu_count() -> int:
    code = "import torch; print(torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def _start_workers(
    url: str, token: str, args: argparse.Namespace, workdir: Path
) -> list[subprocess.Popen[bytes]]:
    gpus = _gpu_count()
    base = [sys.executable, "-m", "workers", "--server", url, "--token", token]
    base += ["--data-dir", str(Path(args.data_dir).resolve())]
    if gpus and not args.workers:
        console.print(f"demo: {gpus} GPU(s) found: one worker process per GPU")
        cmds = [base + ["--device", "cuda", "--gpus", "all"]]
    else:
        cmds = [base + ["--device", "cpu"]] * (args.workers or 2)
    procs = []
    for i, cmd in enumerate(cmds):
        log = open(workdir / f"worker-{i}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if not gpus else dict(os.environ)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def _submit(client: hpo.Client, spec: dict[str, Any]) -> hpo.schemas.StudySummary:
    name = f"{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        return client.create_study({**spec, "name": name})
    except ApiError as exc:
        sys.exit(f"demo: study rejected: {exc.detail}")


def _progress(client: hpo.Client, name: str, budget: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        trials = list(client.trials(name))
        done = [t for t in trials if t.state in ("complete", "pruned", "fail")]
        values = [t.value for t in done if t.state == "complete" and t.value is not None]
        line = f"trials done {len(done)}/{budget}, running {len(trials) - len(done)}"
        line += f", best val accuracy {max(values):.4f}" if values else ""
        if line != last:
            console.print(f"demo: {line}")
            last = line
        if len(done) >= budget:
            return
        time.sleep(1.0)
    sys.exit(f"demo: study not finished after {timeout:.0f} s")


def _lr(params: dict[str, Any]) -> float | None:
    return next((v for k, v in params.items() if k == "lr" or k.startswith("lr_")), None)


def results_table(trials: list[hpo.schemas.TrialItem]) -> Table:
    """Best objective per optimizer, with its learning rate."""
    best: dict[str, hpo.schemas.TrialItem] = {}
    for t in trials:
        if t.state != "complete" or t.value is None:
            continue
        opt = str(t.params.get("optimizer", "-"))
        if opt not in best or t.value > (best[opt].value or 0.0):
            best[opt] = t
    table = Table(title="best validation accuracy per optimizer")
    for col in ("optimizer", "val_accuracy", "lr", "trial"):
        table.add_column(col)
    for opt, t in sorted(best.items(), key=lambda kv: -(kv[1].value or 0.0)):
        lr = _lr(t.params)
        table.add_row(opt, f"{t.value:.4f}", f"{lr:.3g}" if lr else "-", str(t.number))
    return table


def _dashboard_link(url: str, study_id: int, admin_token: str) -> str:
    """The study's dashboard page, checked to answer (signed in with the admin token)."""
    link = f"{url}/dashboard/studies/{study_id}"
    page = httpx.get(link, cookies={"hpo_token": admin_token}, timeout=30)
    if page.status_code != 200:
        sys.exit(f"demo: the dashboard page {link} answered HTTP {page.status_code}")
    return link


def main() -> None:
    args = _args()
    started = time.monotonic()
    _check_mnist(Path(args.data_dir))
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(workdir, port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _wait_ready(url, server)
        tokens = json.loads((workdir / "hpo-tokens.json").read_text())
        spec = yaml.safe_load(Path(args.spec).read_text())
        with hpo.Client(url, tokens["admin"]) as client:
            study = _submit(client, spec)
            console.print(f"demo: server {url}, study {study.name!r} submitted")
            procs = _start_workers(url, tokens["worker"], args, workdir)
            _progress(client, study.name, spec["budget"]["max_trials"], args.timeout)
            console.print(results_table(list(client.trials(study.name))))
        console.print(f"demo: finished in {time.monotonic() - started:.0f} s")
        link = _dashboard_link(url, study.study_id, tokens["admin"])
        console.print(f"dashboard: {link}  (sign in with the admin token in {workdir})")
        _stop(procs)
        procs = []
        if not args.exit:
            console.print("demo: server left running; Ctrl-C to stop")
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop([*procs, server])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
