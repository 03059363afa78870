"""The README's curl examples run as written against a live server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT
from tests.support import ServerProcess


def _curl_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "curl" in b]
    assert len(blocks) == 1, "exactly one curl example block expected"
    return blocks[0]


def test_readme_curl_examples(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        url, tokens = server.url, server.tokens()
        script = "set -euo pipefail\n" + _curl_block()
        result = subprocess.run(
            ["bash", "-c", script],
            env={**os.environ, "HPO": url, "ADMIN": tokens["admin"], "WORKER": tokens["worker"]},
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
        server.stop(timeout=30)
