"""One TPE fit per batch of proposals (issue 23): valid draws, Optuna's TPE outside a
batch, search quality as one at a time, and the pool refill fitting once per pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe import sampler as tpe_module

from service.storage.batch_tpe import BatchTPESampler, sampler_batch
from tests.service.lease_helpers import create_study
from tests.service.test_proposal_pool import fill, pooled_app, proposals

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE: dict[str, Any] = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "width": FloatDistribution(0.0, 1.0, step=0.25),
    "layers": IntDistribution(2, 16, step=2),
    "opt": CategoricalDistribution(["sgd", "adam", "adamw"]),
}


def seeded(sampler: optuna.samplers.BaseSampler, trials: int = 60) -> optuna.Study:
    """A study with ``trials`` finished trials over :data:`SPACE` (random params)."""
    study = optuna.create_study(sampler=sampler)
    random = optuna.samplers.RandomSampler(seed=3)
    rng = np.random.default_rng(3)
    made = []
    for _ in range(trials):
        params = {n: random.sample_independent(study, None, n, d) for n, d in SPACE.items()}  # type: ignore[arg-type]
        made.append(
            optuna.trial.create_trial(params=params, distributions=SPACE, value=rng.random())
        )
    study.add_trials(made)
    return study


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts TPE's history splits (one per density fit)."""
    calls: list[int] = []
    original = tpe_module._split_trials

    def counted(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(tpe_module, "_split_trials", counted)
    return calls


@pytest.mark.parametrize("multivariate", [True, False])
def test_a_batch_fits_once_and_its_draws_are_valid_and_distinct(fits, multivariate) -> None:
    sampler = BatchTPESampler(constant_liar=True, seed=1, multivariate=multivariate)
    study = seeded(sampler)
    with sampler.batch(16):
        drawn = [study.ask(SPACE).params for _ in range(16)]
    assert len(fits) == (1 if multivariate else len(SPACE))  # independent: one per parameter
    for params in drawn:
        for name, dist in SPACE.items():
            assert dist._contains(dist.to_internal_repr(params[name])), (name, params[name])
        assert params["layers"] % 2 == 0 and params["width"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert len({p["lr"] for p in drawn}) == 16 and len({p["dropout"] for p in drawn}) == 16
    fits.clear()
    study.ask(SPACE)  # after the batch: a fit per trial again
    assert len(fits) == (1 if multivariate else len(SPACE))


def test_outside_a_batch_it_is_optunas_tpe() -> None:
    ours = seeded(BatchTPESampler(constant_liar=True, seed=5))
    theirs = seeded(optuna.samplers.TPESampler(constant_liar=True, seed=5))
    for _ in range(5):
        assert ours.ask(SPACE).params == theirs.ask(SPACE).params
    with sampler_batch(ours.sampler, 1):  # a batch of one is no batch
        assert ours.ask(SPACE).params == theirs.ask(SPACE).params
    ours_random = seeded(optuna.samplers.RandomSampler(seed=0))
    theirs_random = seeded(optuna.samplers.RandomSampler(seed=0))
    with sampler_batch(ours_random.sampler, 8):  # not TPE: a no-op, draws unchanged
        assert ours_random.ask(SPACE).params == theirs_random.ask(SPACE).params


def _bowl(params: dict[str, float]) -> float:
    x, y = params["x"] - 0.3, params["y"] + 1.2
    return x**2 + y**2 + 0.3 * (1 - np.cos(3 * x))


def _log_regret(sampler: optuna.samplers.BaseSampler, batch: int, n: int = 160) -> float:
    """W=8 parallel workers: 8 asks (one batch of ``batch``), then their 8 tells."""
    space = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}
    study = optuna.create_study(sampler=sampler)
    while len(study.trials) < n:
        with sampler_batch(sampler, batch):
            asked = [study.ask(space) for _ in range(8)]
        for trial in asked:
            study.tell(trial, _bowl(trial.params))
    return float(np.log10(study.best_value + 1e-9))


def test_batched_search_is_as_good_as_one_at_a_time() -> None:
    seeds = range(8)
    one = np.mean([_log_regret(BatchTPESampler(constant_liar=True, seed=s), 1) for s in seeds])
    batched = np.mean([_log_regret(BatchTPESampler(constant_liar=True, seed=s), 8) for s in seeds])
    random = np.mean([_log_regret(optuna.samplers.RandomSampler(seed=s), 1) for s in seeds])
    assert one < random - 1  # TPE finds the bowl: regret 10x below random's
    assert batched <= one + 0.3, (batched, one)  # and the batch no worse (within 2x)


def test_the_refill_draws_a_pass_with_one_fit_and_one_refresh(
    tmp_path: Path, fits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from service.storage.trial_view import TrialView
    from tests.conftest import mint_tokens

    refreshes: list[int] = []
    original = TrialView._refresh
    monkeypatch.setattr(
        TrialView, "_refresh", lambda view, sid: refreshes.append(sid) or original(view, sid)
    )

    app = pooled_app(f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path, proposal_pool=8)
    with TestClient(app) as client:
        ctx, tokens = app.state.ctx, mint_tokens(app.state.ctx)
        sampler = {"name": "tpe", "seed": 1, "options": {"n_startup_trials": 3}}
        create_study(client, tokens, name="b", sampler=sampler)
        history = optuna.load_study(study_name="b", storage=ctx.store.storage)
        space = {
            "optimizer": CategoricalDistribution(["sgd", "momentum", "nesterov", "adam"]),
            "lr": FloatDistribution(1e-4, 1.0, log=True),
        }
        for value in (0.3, 0.1, 0.2, 0.5):
            params = {"optimizer": "adam", "lr": value / 10}
            history.add_trial(
                optuna.trial.create_trial(params=params, distributions=space, value=value)
            )
        ctx.store.view.get_all_trials(history._study_id)  # the first, full read
        fits.clear()
        refreshes.clear()
        assert fill(ctx) == 8
        drawn = [p.params for p in proposals(ctx)]
    app.state.ctx.close()
    assert len(fits) <= 2  # the joint fit, and momentum's (when a draw needs it): not 8
    assert len(refreshes) == 1  # the batch's trials are read once, not once per draw
    assert len({p["lr"] for p in drawn}) == 8
    assert all(1e-4 <= p["lr"] <= 1.0 for p in drawn)
    assert all(("momentum" in p) == (p["optimizer"] in ("momentum", "nesterov")) for p in drawn)
