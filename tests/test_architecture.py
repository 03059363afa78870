"""The three parts keep their seams: ``hpo`` (contract + client), ``service``, ``workers``.

* ``service`` and ``workers`` both import ``hpo``; they never import each other
  (checked in the source, every import statement, lazy ones included);
* ``hpo`` imports neither; the ``hpo`` command's composition root is ``hpo_cli``,
  outside the contract package;
* ``import hpo`` (and its contract modules) pulls in neither torch nor any server
  package, and the worker process never loads a server package.

The runtime checks run in a fresh interpreter, so modules imported by other
tests in this process can neither hide nor fake a leak.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = ("fastapi", "sqlalchemy", "optuna", "alembic", "uvicorn", "starlette")


def _imported_roots(path: Path) -> set[str]:
    """Top-level package of every import in ``path`` (function-level imports included)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _offenders(package: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        bad = _imported_roots(path) & forbidden
        if bad:
            found.append(f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}")
    return found


def test_service_never_imports_workers() -> None:
    assert _offenders("service", {"workers"}) == []


def test_workers_never_import_service() -> None:
    assert _offenders("workers", {"service"}) == []


def test_hpo_imports_neither_part() -> None:
    assert _offenders("hpo", {"service", "workers"}) == []


def test_the_seam_check_can_fail(tmp_path: Path) -> None:
    # The check reads lazy imports too: a function-level import is found.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from service.core import db\n    import workers.cli\n")
    assert _imported_roots(module) == {"service", "workers"}


# --------------------------------------------------------------------------- runtime


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


CONTRACT = [
    "hpo",
    "hpo.protocol",
    "hpo.spec",
    "hpo.settings",
    "hpo.schemas",
    "hpo.client",
    "hpo.transport",
    "hpo.specfile",
]


def test_import_hpo_pulls_in_no_torch_and_no_server_package() -> None:
    loaded = _modules_after(CONTRACT)
    assert set(CONTRACT) <= loaded  # the imports really happened
    leaked = sorted(_top_level(loaded) & {*SERVER_ONLY, "torch", "service", "workers"})
    assert leaked == [], f"import hpo loads {leaked}"


@pytest.mark.parametrize(
    "imports",
    [
        ["workers.daemon", "workers.cli", "workers.runner", "workers.supervisor"],
        ["workers.daemon", "workers.trainer", "workers.data", "workers.model"],
    ],
    ids=["daemon", "daemon+trainer"],
)
def test_the_worker_process_loads_no_server_package(imports: list[str]) -> None:
    loaded = _modules_after(imports)
    assert set(imports) <= loaded
    leaked = sorted(_top_level(loaded) & {*SERVER_ONLY, "service"})
    assert leaked == [], f"the worker loads {leaked}"


def test_the_contract_and_client_load_neither_part() -> None:
    loaded = _modules_after(["hpo", "hpo.client", "hpo.cli", "hpo.cli.study"])
    assert not _top_level(loaded) & {"service", "workers", "torch", *SERVER_ONLY}


def test_the_cli_import_is_light() -> None:
    # `hpo --help` imports hpo_cli: it must not pay for torch, the daemon or the server.
    loaded = _modules_after(["hpo_cli"])
    assert "torch" not in loaded and "workers.daemon" not in loaded
    assert not _top_level(loaded) & set(SERVER_ONLY)


def private_imports(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``from <our package> import _name``: a private name used across modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in ("hpo", "hpo_cli", "service", "workers"):
                continue
            found += [
                f"{path.relative_to(root)}:{node.lineno} imports {node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    found = []
    for package in ("hpo", "hpo_cli", "service", "workers"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            found += private_imports(path)
    assert found == []


def test_the_private_import_check_can_fail(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from workers.trainer import _Loop, train\n")
    assert private_imports(module, tmp_path) == ["m.py:1 imports workers.trainer._Loop"]
