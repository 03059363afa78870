"""Fixtures of the integration tests: a real server, real worker processes, real libraries.

The libraries come with the ``integrations`` extra (``pip install -e '.[integrations]'``).
A test whose library is missing skips with the reason, unless
``HPO_REQUIRE_INTEGRATIONS=1`` (set by CI), which turns the skip into a failure.

Workers run in the test's temp folder (Lightning writes ``lightning_logs/`` and
CatBoost ``catboost_info/`` into the working directory), with the repository on
``PYTHONPATH`` so ``--objective tests.integrations...`` imports, ``HPO_DATA_DIR``
for the MNIST files and ``KERAS_BACKEND=torch``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, mnist_root
from tests.e2e.conftest import Server, Stack, stack_for
from tests.support import study_spec, wait_for

REQUIRE = "HPO_REQUIRE_INTEGRATIONS"


def need(*modules: str) -> None:
    """Skip (fail under ``HPO_REQUIRE_INTEGRATIONS=1``) unless every module imports."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    why = f"{', '.join(missing)} not installed (pip install -e '.[integrations]')"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {why}")
    pytest.skip(why)


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """The end-to-end ``stack`` without its MNIST check (only some libraries here use MNIST)."""
    yield from stack_for(request, tmp_path)


def run_study(
    stack: Stack,
    name: str,
    objective: str,
    pruner: dict[str, Any],
    trials: int,
    seed: int = 3,
) -> tuple[Server, list[dict[str, Any]]]:
    """A define-by-run study of ``trials`` trials on a fresh server, run to its end by one
    ``hpo worker --objective tests.integrations.OBJECTIVE``; the server and its trials."""
    server = stack.server()
    api = server.api()
    spec = study_spec(
        name,
        workload=name,
        space={},
        objective="value",
        pruner=pruner,
        sampler={"name": "tpe", "seed": seed},  # optuna.create_study's default, as in the examples
        budget={"max_trials": trials},
    )
    api.create_study(spec)
    cwd = stack.workdir / "cwd"
    cwd.mkdir(exist_ok=True)
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "HPO_DATA_DIR": str(mnist_root()),
        "KERAS_BACKEND": "torch",
    }
    worker = stack.worker(
        server.url,
        server.tokens()["worker"],
        "--objective",
        f"tests.integrations.{objective}",
        "--workload",
        name,
        "--max-trials",
        str(trials),
        env=env,
        cwd=cwd,
    )
    items = wait_for(lambda: api.finished(name, trials), 90, f"{trials} trials of {name}")
    worker.wait(30)
    return server, items
