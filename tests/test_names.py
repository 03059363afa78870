"""One name per idea (issue 27, part 4), checked in the source of hpo/, service/, workers/:

* the route prefixes are written once, as ``hpo.protocol.API_PREFIX`` and
  ``DASHBOARD_PREFIX``: no other string literal spells them (docstrings aside);
* no import renames a first-party module (``trials as leases``), apart from the
  listed ones, each with its reason;
* the server's version comes from the package metadata.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("hpo", "service", "workers")
PREFIX_HOME = REPO_ROOT / "hpo" / "protocol.py"
#: Module aliases that stay, with why: the plain name is taken where they are used.
ALLOWED_ALIASES = {
    # the trainers and tests take a ``checkpoint`` path argument
    ("workers.checkpoint", "ckpt"),
}


def _sources() -> Iterator[Path]:
    for part in PARTS:
        yield from sorted((REPO_ROOT / part).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def prefix_literals(source: str) -> list[str]:
    """String literals (f-string parts included) that spell a route prefix."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        if "/api/v1" in node.value or node.value.startswith("/dashboard")
    ]


def test_route_prefixes_are_spelled_once() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}: {literal!r}"
        for path in _sources()
        if path != PREFIX_HOME
        for literal in prefix_literals(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_prefix_check_can_fail() -> None:
    code = '"""Served at /api/v1/x."""\nA = "/api/v1/x"\nB = f"/dashboard/{1}"\n'
    assert prefix_literals(code) == ["/api/v1/x", "/dashboard/"]


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def module_aliases(source: str) -> list[tuple[str, str]]:
    """(module, alias) for each import that binds a first-party module to another name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, a.asname) for a in node.names if a.asname]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [
                (f"{node.module}.{a.name}", a.asname)
                for a in node.names
                if a.asname and a.asname != a.name and _is_module(f"{node.module}.{a.name}")
            ]
    return [(m, a) for m, a in found if m.split(".")[0] in PARTS]


def test_no_import_renames_a_first_party_module() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}: {module} as {alias}"
        for path in _sources()
        for module, alias in module_aliases(path.read_text(encoding="utf-8"))
        if (module, alias) not in ALLOWED_ALIASES
    ]
    assert found == []


def test_the_alias_check_can_fail() -> None:
    code = (
        "from service import trials as leases\nfrom service.trials import lease as grant\n"
        "import hpo.protocol as wire\nimport numpy as np\n"
    )
    assert module_aliases(code) == [("service.trials", "leases"), ("hpo.protocol", "wire")]


def test_the_server_reports_the_package_version(app) -> None:  # type: ignore[no-untyped-def]
    import hpo

    assert hpo.__version__ == metadata.version("hpo-service")
    assert app.openapi()["info"]["version"] == hpo.__version__
