"""The worker side never imports server-only packages (and its CLI not even torch).

Checked in a fresh interpreter, so modules imported by other tests in this
process cannot hide or fake a leak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("fastapi", "sqlalchemy", "optuna", "alembic", "uvicorn", "starlette")


def _modules_after(imports: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {imports!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_worker_modules_import_no_server_dependency() -> None:
    imports = [
        "workers.protocol",
        "workers.client",
        "workers.daemon",
        "workers.cli",
        "workers.runner",
        "workers.supervisor",
        "workers.__main__",
    ]
    loaded = _modules_after(imports)
    assert set(imports) <= loaded  # the imports really happened
    leaked = sorted(_top_level(loaded) & set(SERVER_ONLY))
    assert leaked == [], f"worker imports server-only packages: {leaked}"


def test_worker_with_trainer_imports_no_server_dependency() -> None:
    # The full worker process: daemon plus trainer, data and model (torch is fine here).
    imports = ["workers.daemon", "workers.trainer", "workers.data", "workers.settings"]
    loaded = _modules_after(imports)
    assert "torch" in loaded  # sanity: this really is the training side
    leaked = sorted(_top_level(loaded) & set(SERVER_ONLY))
    assert leaked == [], f"worker imports server-only packages: {leaked}"


def test_cli_import_is_light() -> None:
    # `hpo --help` imports workers.cli: it must not pay for torch or the daemon.
    loaded = _modules_after(["workers.cli"])
    assert "torch" not in loaded
    assert "workers.daemon" not in loaded
    assert "service" not in _top_level(loaded)
