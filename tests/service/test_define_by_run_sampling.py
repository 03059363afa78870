"""Define-by-run keeps one sampling context per trial: one relative sample, as ``ask()``.

A multivariate sampler draws its joint (relative) sample when a trial is
built. The server used to build a fresh ``optuna.Trial`` for every suggest, so
multivariate TPE drew a new joint sample per parameter, and the parameters of
one trial came from different joint draws.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pytest

from tests.conftest import Tokens
from tests.service.lease_helpers import API, Worker, create_study

DISTRIBUTIONS = {
    "x": {"type": "float", "low": -1.0, "high": 1.0},
    "y": {"type": "float", "low": -1.0, "high": 1.0},
    "z": {"type": "float", "low": -1.0, "high": 1.0},
}
TPE = {"name": "tpe", "seed": 1, "options": {"multivariate": True, "n_startup_trials": 3}}


@pytest.fixture
def relative_draws(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How often multivariate TPE drew a joint sample, by trial number."""
    draws: Counter[int] = Counter()
    original = optuna.samplers.TPESampler.sample_relative

    def counted(self: Any, study: Any, trial: Any, space: Any) -> Any:
        draws[trial.number] += 1
        return original(self, study, trial, space)

    monkeypatch.setattr(optuna.samplers.TPESampler, "sample_relative", counted)
    return draws


def run_define_by_run(client: Any, tokens: Tokens, trials: int) -> list[dict[str, float]]:
    registration = {"hostname": "box", "workloads": ["toy"]}
    answer = client.post(
        f"{API}/workers/register", json=registration, headers=Tokens.header(tokens.worker)
    )
    worker = Worker(client, tokens.worker, answer.json()["worker_id"])
    drawn = []
    for _ in range(trials):
        lease = worker.trial(studies=["dbr"])["lease_id"]
        params = {}
        for name, distribution in DISTRIBUTIONS.items():
            body = {"name": name, "distribution": distribution}
            params[name] = worker.ok(lease, "suggest", body)["value"]
        assert (
            worker.ok(lease, "suggest", {"name": "x", "distribution": DISTRIBUTIONS["x"]})["value"]
            == params["x"]
        )  # asked again: the recorded value
        value = sum(v * v for v in params.values())
        worker.ok(lease, "complete", {"value": value})
        drawn.append(params)
    return drawn


def test_one_relative_sample_per_trial(
    client: Any, tokens: Tokens, ctx: Any, relative_draws: Counter[int]
) -> None:
    create_study(
        client, tokens, name="dbr", space={}, workload="toy", sampler=TPE, budget={"max_trials": 8}
    )
    drawn = run_define_by_run(client, tokens, 8)
    assert len({tuple(p.values()) for p in drawn}) == 8
    # one joint draw per trial (today's main drew one per parameter: 3 per trial)
    assert dict(relative_draws) == {n: 1 for n in range(8)}
    # ... and nothing is kept once the trials ended
    [cached] = ctx.store._studies.values()
    assert not cached.live


def test_what_was_drawn_is_the_optuna_trials_params(client: Any, tokens: Tokens, ctx: Any) -> None:
    create_study(
        client, tokens, name="dbr", space={}, workload="toy", sampler=TPE, budget={"max_trials": 5}
    )
    drawn = run_define_by_run(client, tokens, 5)
    optuna_study = optuna.load_study(study_name="dbr", storage=ctx.store.storage)
    assert [t.params for t in optuna_study.trials] == drawn
