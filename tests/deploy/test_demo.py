"""The README's demo command, in its --exit mode, against the real MNIST files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, mnist_root


def test_demo_runs_the_quick_study_and_prints_the_results(tmp_path: Path) -> None:
    env = {**os.environ, "HPO_DATA_DIR": str(mnist_root()), "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--exit", "--workdir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "trials done 12/12" in out
    assert "best validation accuracy per optimizer" in out
    rows = re.findall(r"│ (sgd|momentum|rmsprop|adam)\s+│ (0\.\d{4})\s+│ ([0-9.e-]+)\s+│", out)
    assert rows, out[-2000:]
    # Two epochs on 4k images: every optimizer's best run clearly beats chance.
    assert all(float(acc) > 0.5 for _, acc, _ in rows)
    # The printed link is the study's dashboard page (the demo checked that it answers 200).
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/dashboard/studies/\d+ ", out), out[-500:]


def test_demo_stops_at_once_without_mnist(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--exit", "--data-dir", str(tmp_path / "none")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "train-images-idx3-ubyte" in result.stderr
    assert str(tmp_path / "none") in result.stderr


def _make_rules() -> dict[str, tuple[list[str], str]]:
    """Each Makefile target: its prerequisites and its recipe."""
    rules = {}
    pattern = r"^([\w-]+):([^\n]*)\n((?:\t[^\n]*\n)*)"
    for target, deps, recipe in re.findall(pattern, (REPO_ROOT / "Makefile").read_text(), re.M):
        rules[target] = (deps.split(), recipe)
    return rules


def test_make_demo_installs_no_system_packages() -> None:
    # Only the tests need chromium, docker-compose and slurm: `make demo` must not sudo apt.
    rules, chain, seen = _make_rules(), ["demo"], set()
    while chain:
        target = chain.pop()
        seen.add(target)
        deps, recipe = rules.get(target, ([], ""))
        assert "--system" not in recipe, f"make {target} (needed by demo) installs system packages"
        chain += [dep for dep in deps if dep in rules and dep not in seen]
    assert "setup" in seen
    assert "--system" in rules["setup-test"][1]  # the tests still get their packages
