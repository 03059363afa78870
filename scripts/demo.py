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


def _submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    name = f"{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    response = client.post("/api/v1/studies", json={**spec, "name": name})
    if response.status_code >= 400:
        sys.exit(f"demo: study rejected: {response.text}")
    return name


def _trials(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(
            f"/api/v1/studies/{name}/trials", params={"limit": 500, "offset": len(items)}
        ).json()
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def _progress(client: httpx.Client, name: str, budget: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        trials = _trials(client, name)
        done = [t for t in trials if t["state"] in ("complete", "pruned", "fail")]
        values = [t["value"] for t in done if t["state"] == "complete" and t["value"] is not None]
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


def results_table(trials: list[dict[str, Any]]) -> Table:
    """Best objective per optimizer, with its learning rate."""
    best: dict[str, dict[str, Any]] = {}
    for t in trials:
        if t["state"] != "complete" or t["value"] is None:
            continue
        opt = str(t["params"].get("optimizer", "-"))
        if opt not in best or t["value"] > best[opt]["value"]:
            best[opt] = t
    table = Table(title="best validation accuracy per optimizer")
    for col in ("optimizer", "val_accuracy", "lr", "trial"):
        table.add_column(col)
    for opt, t in sorted(best.items(), key=lambda kv: -kv[1]["value"]):
        lr = _lr(t["params"])
        table.add_row(opt, f"{t['value']:.4f}", f"{lr:.3g}" if lr else "-", str(t["number"]))
    return table


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
        headers = {"Authorization": f"Bearer {tokens['admin']}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            name = _submit(client, spec)
            console.print(f"demo: server {url}, study {name!r} submitted")
            procs = _start_workers(url, tokens["worker"], args, workdir)
            _progress(client, name, spec["budget"]["max_trials"], args.timeout)
            console.print(results_table(_trials(client, name)))
        console.print(f"demo: finished in {time.monotonic() - started:.0f} s")
        console.print(f"dashboard: {url}/studies/{name}  (log in with a token from {workdir})")
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
