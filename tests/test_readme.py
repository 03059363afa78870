"""The README's curl examples run as written against a live server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _curl_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "curl" in b]
    assert len(blocks) == 1, "exactly one curl example block expected"
    return blocks[0]


def test_readme_curl_examples(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "HPO_DATABASE_URL": f"sqlite:///{tmp_path / 'hpo.db'}",
        "HPO_TOKEN_FILE": str(tmp_path / "tokens.json"),
    }
    cmd = [sys.executable, "-m", "service.cli", "server", "--port", str(port)]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        tokens = json.loads((tmp_path / "tokens.json").read_text())
        script = "set -euo pipefail\n" + _curl_block()
        result = subprocess.run(
            ["bash", "-c", script],
            env={**env, "HPO": url, "ADMIN": tokens["admin"], "WORKER": tokens["worker"]},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        # The final export holds the completed trial with its value.
        assert "0.93" in result.stdout.splitlines()[-1] or "0.93" in result.stdout
        summary = httpx.get(
            f"{url}/api/v1/studies/readme", headers={"Authorization": f"Bearer {tokens['admin']}"}
        ).json()
        assert summary["best_trial"]["value"] == 0.93, summary
    finally:
        server.terminate()
        server.wait(timeout=30)
