"""Optuna's integrations run unchanged on the fleet: each objective is copied from
optuna-examples (only the data made small and local) and run by ``hpo worker
--objective`` against a real server over real HTTP, with the study's pruner set in
its spec. Each library's own pruning callback reports every step to the server and
asks ``trial.should_prune()``; the test wants at least one trial PRUNED and at
least one COMPLETE, in the service's view and in Optuna's own storage.

Needs the ``integrations`` extra (see conftest.py); each test takes seconds.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from tests.e2e.conftest import Server, Stack, need_mnist
from tests.integrations.conftest import need, run_study

pytestmark = [pytest.mark.integrations, pytest.mark.timeout(150)]


def median(warmup: int) -> dict[str, Any]:
    """Optuna's MedianPruner after one complete trial (the examples' warm-up steps)."""
    return {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": warmup}}


#: Successive halving from step 1: a trial goes on at a rung only if it is among the best.
HALVING = {"name": "successive-halving", "options": {"min_resource": 1, "reduction_factor": 3}}


def assert_pruned_and_complete(server: Server, name: str, items: list[dict[str, Any]]) -> None:
    states = {t["state"] for t in items}
    failed = [t.get("fail_reason") for t in items if t["state"] == "fail"]
    assert not failed, failed
    assert states == {"complete", "pruned"}, [(t["number"], t["state"]) for t in items]
    api = server.api()
    for t in items:
        steps = api.trial(name, t["number"])["intermediate_values"]
        assert steps, t  # the callback reported through the lease
    # Optuna's own record of the study says the same.
    study = optuna.load_study(study_name=name, storage=server.env["HPO_DATABASE_URL"])
    by_state = {s: study.get_trials(deepcopy=False, states=(s,)) for s in optuna.trial.TrialState}
    assert by_state[optuna.trial.TrialState.PRUNED] and by_state[optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(items)


@pytest.mark.parametrize(
    ("name", "package", "pruner", "trials", "mnist"),
    [
        pytest.param("lightgbm", "lightgbm", median(10), 6, False, id="lightgbm"),
        pytest.param("xgboost", "xgboost", median(5), 6, False, id="xgboost"),
        pytest.param("catboost", "catboost", median(5), 6, False, id="catboost"),
        pytest.param("lightning", "lightning", HALVING, 5, True, id="pytorch-lightning"),
        pytest.param("keras", "keras", HALVING, 5, True, id="keras-on-torch"),
    ],
)
def test_pruning_callback(
    stack: Stack, name: str, package: str, pruner: dict[str, Any], trials: int, mnist: bool
) -> None:
    """The library's callback from ``objectives_<name>.py`` prunes some trials."""
    need("optuna_integration", package)
    if mnist:
        need_mnist()
    server, items = run_study(stack, name, f"objectives_{name}:objective", pruner, trials)
    assert_pruned_and_complete(server, name, items)


def test_lightning_ddp_refusal_fails_the_trial_with_its_reason(stack: Stack) -> None:
    """Lightning's callback supports DDP only over Optuna's RDBStorage; the fleet's trial
    is backed by the server's REST API, so the callback refuses. The user sees that
    refusal as the trial's failure reason (no real DDP is started)."""
    need("optuna_integration", "lightning")
    _, [trial] = run_study(
        stack, "lightning-ddp", "objectives_lightning:ddp_objective", median(1), 1
    )
    assert trial["state"] == "fail", trial
    assert "supports only optuna.storages.RDBStorage in DDP" in trial["fail_reason"], trial
