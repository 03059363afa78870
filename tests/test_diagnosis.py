"""service.studies.proposals: study-level patterns -> proposed search-space edits.

Hand-built trial records (the function is pure) plus one REAL small Optuna
study whose objective runs the reference trainer with a deliberately bad lr region.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from hpo.findings import Finding, FindingKind, Severity
from hpo.schemas import Proposal
from service.studies.proposals import TrialRecord, diagnose_study
from service.studies.splits import MIN_REGION_BAD, best_split, fisher_greater, readable_between

OPTIMIZERS_SPEC: dict[str, Any] = {
    "space": {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
        "lr_sgd": {
            "type": "float",
            "low": 1e-4,
            "high": 10.0,
            "log": True,
            "setting": "lr",
            "when": {"optimizer": ["sgd"]},
        },
        "lr_adaptive": {
            "type": "float",
            "low": 1e-5,
            "high": 0.1,
            "log": True,
            "setting": "lr",
            "when": {"optimizer": ["adam", "rmsprop"]},
        },
        "dropout": {"type": "float", "low": 0.0, "high": 0.8},
        "batch_size": {"type": "int", "low": 16, "high": 1024, "log": True},
    }
}


def finding(kind: FindingKind) -> Finding:
    return Finding(kind=kind, epoch=1, message=str(kind), severity=Severity.WARNING)


def record(number: int, params: dict[str, Any], *kinds: FindingKind, state: str = "complete"):
    return TrialRecord(
        number=number, state=state, params=params, findings=[finding(k) for k in kinds]
    )


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def sgd_study(n: int, seed: int, diverge_above: float | None) -> list[TrialRecord]:
    """sgd trials over lr_sgd (Optuna's parameter names); diverged above the given lr."""
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        lr = log_uniform(rng, 1e-4, 10.0)
        params = {"optimizer": "sgd", "lr_sgd": lr, "dropout": rng.uniform(0, 0.8)}
        bad = diverge_above is not None and lr > diverge_above
        trials.append(record(i, params, *([FindingKind.DIVERGED] if bad else [])))
    return trials


def paths(proposals: list[Proposal]) -> list[str]:
    return [p.edit.path for p in proposals]


# --------------------------------------------------------------------------- no proposals


def test_healthy_study_gets_no_proposal() -> None:
    assert diagnose_study(sgd_study(60, seed=1, diverge_above=None), OPTIMIZERS_SPEC) == []
    assert diagnose_study([], OPTIMIZERS_SPEC) == []


@pytest.mark.parametrize("seed", range(20))
def test_findings_unrelated_to_the_params_give_no_proposal(seed: int) -> None:
    # A fifth of the trials get a finding at random: no region of any parameter is bad.
    rng = random.Random(seed)
    trials = sgd_study(60, seed=seed, diverge_above=None)
    for t in trials:
        if rng.random() < 0.2:
            t.findings.append(finding(rng.choice(list(FindingKind))))
    assert diagnose_study(trials, OPTIMIZERS_SPEC) == []


def test_a_few_bad_trials_are_not_a_pattern() -> None:
    trials = sgd_study(40, seed=3, diverge_above=None)
    top = sorted(trials, key=lambda t: -t.params["lr_sgd"])[: MIN_REGION_BAD - 1]
    for t in top:  # the 3 highest lrs all diverged: still an anecdote
        t.findings.append(finding(FindingKind.DIVERGED))
    assert diagnose_study(trials, OPTIMIZERS_SPEC) == []
    top_four = sorted(trials, key=lambda t: -t.params["lr_sgd"])[MIN_REGION_BAD - 1]
    top_four.findings.append(finding(FindingKind.DIVERGED))  # the 4th makes it one
    assert paths(diagnose_study(trials, OPTIMIZERS_SPEC)) == ["space.lr_sgd.high"]


def test_no_narrowing_without_a_good_region_to_keep() -> None:
    # Above 0.5 every trial diverges, but below it 40% do as well: no clean split.
    trials = sgd_study(60, seed=12, diverge_above=0.5)
    for t in trials:
        if t.params["lr_sgd"] <= 0.5 and t.number % 5 < 2:
            t.findings.append(finding(FindingKind.DIVERGED))
    assert diagnose_study(trials, OPTIMIZERS_SPEC) == []


def test_running_trials_are_ignored() -> None:
    trials = sgd_study(40, seed=4, diverge_above=0.5)
    for t in trials:
        t.state = "running"
    assert diagnose_study(trials, OPTIMIZERS_SPEC) == []


# --------------------------------------------------------------------------- numeric splits


def test_diverging_lr_region_is_narrowed_to_a_readable_high() -> None:
    trials = sgd_study(40, seed=5, diverge_above=0.5)
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    lrs = sorted(t.params["lr_sgd"] for t in trials)
    bad = [lr for lr in lrs if lr > 0.5]
    assert proposal.parameter == "lr_sgd" and proposal.outcome == "diverged"
    assert proposal.region == "above" and proposal.condition == {}
    assert proposal.bad == proposal.total == len(bad) >= MIN_REGION_BAD
    assert proposal.kept_bad == 0 and proposal.kept_total == len(lrs) - len(bad)
    new = proposal.edit.new
    assert max(lr for lr in lrs if lr <= 0.5) <= new < min(bad)
    assert new == float(f"{new:.1g}")  # one significant digit: readable
    assert proposal.edit.model_dump() == {
        "op": "replace",
        "path": "space.lr_sgd.high",
        "old": 10.0,
        "new": new,
    }
    assert proposal.message == (
        f"lr_sgd above {new:g} diverged in every trial ({len(bad)} of {len(bad)}): "
        f"narrow lr_sgd to high: {new:g}"
    )
    assert proposal.p_value < 1e-4


def test_conditioned_pattern_names_the_optimizer_and_what_else_the_edit_cuts() -> None:
    # lr_adaptive is shared by adam and rmsprop; adam diverges above 0.02 (not always),
    # rmsprop is fine everywhere. Params keyed by SETTING names (lr), as trainers see them.
    rng = random.Random(6)
    trials = []
    for i in range(80):
        optimizer = ("adam", "rmsprop")[i % 2]
        lr = log_uniform(rng, 1e-4, 0.1)
        bad = optimizer == "adam" and lr > 0.02 and i % 10 != 0  # 4 in 5 diverge
        kinds = [FindingKind.DIVERGED] if bad else []
        trials.append(record(i, {"optimizer": optimizer, "lr": lr, "dropout": 0.1}, *kinds))
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    assert proposal.condition == {"optimizer": "adam"} and proposal.parameter == "lr_adaptive"
    adam_above = [
        t for t in trials if t.params["optimizer"] == "adam" and t.params["lr"] > proposal.threshold
    ]
    assert proposal.total == len(adam_above) and proposal.bad == sum(
        bool(t.findings) for t in adam_above
    )
    assert proposal.pattern == (
        f"{proposal.bad} of {proposal.total} adam trials with lr_adaptive > "
        f"{proposal.threshold:g} diverged"
    )
    rms_above = [
        t
        for t in trials
        if t.params["optimizer"] == "rmsprop" and t.params["lr"] > proposal.threshold
    ]
    assert proposal.message.endswith(
        f"narrow lr_adaptive to high: {proposal.threshold:g} (this also excludes "
        f"{len(rms_above)} trials with another optimizer, {len(rms_above)} of them fine)"
    )
    assert proposal.edit.path == "space.lr_adaptive.high" and proposal.edit.old == 0.1


def test_dropout_above_a_value_underfits_in_every_trial() -> None:
    rng = random.Random(7)
    trials = []
    for i in range(30):
        dropout = rng.uniform(0.0, 0.8)
        kinds = [FindingKind.UNDERFITTING] if dropout > 0.6 else []
        trials.append(record(i, {"optimizer": "sgd", "lr_sgd": 0.05, "dropout": dropout}, *kinds))
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    n = sum(t.params["dropout"] > 0.6 for t in trials)
    assert proposal.message == (
        f"dropout above 0.6 underfit in every trial ({n} of {n}): narrow dropout to high: 0.6"
    )
    assert proposal.edit.old == 0.8 and proposal.edit.new == 0.6


def test_too_low_lr_underfits_narrows_the_low_bound() -> None:
    trials = sgd_study(40, seed=8, diverge_above=None)
    for t in trials:
        if t.params["lr_sgd"] < 3e-3:
            t.findings.append(finding(FindingKind.UNDERFITTING))
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    lrs = [t.params["lr_sgd"] for t in trials]
    assert proposal.region == "below" and proposal.edit.path == "space.lr_sgd.low"
    assert (
        max(lr for lr in lrs if lr < 3e-3)
        < proposal.edit.new
        <= min(lr for lr in lrs if lr >= 3e-3)
    )
    assert proposal.edit.old == 1e-4 and "narrow lr_sgd to low:" in proposal.message


def test_int_parameter_gets_an_int_bound_and_failed_trials_count() -> None:
    rng = random.Random(9)
    trials = []
    for i in range(30):
        batch = round(log_uniform(rng, 16, 1024))
        state = "fail" if batch > 250 else "complete"  # out of memory, say
        trials.append(
            record(i, {"optimizer": "sgd", "lr_sgd": 0.05, "batch_size": batch}, state=state)
        )
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    assert proposal.outcome == "failed" and proposal.edit.path == "space.batch_size.high"
    assert isinstance(proposal.edit.new, int) and proposal.edit.old == 1024
    kept = [t.params["batch_size"] for t in trials if t.params["batch_size"] <= 250]
    cut = [t.params["batch_size"] for t in trials if t.params["batch_size"] > 250]
    assert max(kept) <= proposal.edit.new < min(cut)
    assert proposal.bad == proposal.total == len(cut)


def test_one_proposal_per_path_lists_the_weaker_patterns_as_related() -> None:
    trials = sgd_study(40, seed=10, diverge_above=0.5)
    for t in trials:
        if t.params["lr_sgd"] > 1.0:  # the worst of them also exploded
            t.findings.append(finding(FindingKind.EXPLODING_GRADIENTS))
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    assert proposal.outcome == "diverged"
    assert len(proposal.related) == 1 and "exploding gradients" in proposal.related[0]


# --------------------------------------------------------------------------- categorical choices


def test_a_choice_that_always_diverges_is_removed() -> None:
    rng = random.Random(11)
    trials = []
    for i in range(36):
        optimizer = ("sgd", "adam", "rmsprop")[i % 3]
        lr_key = "lr_sgd" if optimizer == "sgd" else "lr_adaptive"
        params = {"optimizer": optimizer, lr_key: 1e-3 * rng.uniform(1, 2)}
        kinds = [FindingKind.DIVERGED] if optimizer == "rmsprop" else []
        trials.append(record(i, params, *kinds))
    (proposal,) = diagnose_study(trials, OPTIMIZERS_SPEC)
    assert proposal.region == "choice" and proposal.choices == ["rmsprop"]
    assert (proposal.bad, proposal.total, proposal.kept_bad, proposal.kept_total) == (12, 12, 0, 24)
    assert proposal.edit.model_dump() == {
        "op": "replace",
        "path": "space.optimizer.choices",
        "old": ["sgd", "adam", "rmsprop"],
        "new": ["sgd", "adam"],
    }
    assert proposal.message == "rmsprop diverged in 12 of 12 trials: remove rmsprop from optimizer"


def test_no_choice_is_removed_when_it_is_only_often_bad() -> None:
    trials = []
    for i in range(36):
        optimizer = ("sgd", "adam", "rmsprop")[i % 3]
        bad = optimizer == "rmsprop" and i % 5 < 3  # 60% of rmsprop trials diverge
        trials.append(record(i, {"optimizer": optimizer}, *([FindingKind.DIVERGED] if bad else [])))
    assert diagnose_study(trials, OPTIMIZERS_SPEC) == []


def test_no_choice_is_removed_when_every_choice_is_bad() -> None:
    trials = [
        record(i, {"optimizer": ("sgd", "adam", "rmsprop")[i % 3]}, FindingKind.DIVERGED)
        for i in range(30)
    ]
    assert diagnose_study(trials, OPTIMIZERS_SPEC) == []


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("low", "high", "side", "expected"),
    [
        (0.0123, 0.031, "above", 0.02),
        (0.58, 0.63, "above", 0.6),
        (0.58, 0.59, "above", 0.58),
        (0.0123, 0.0129, "above", 0.0123),
        (2.1e-5, 9.7e-5, "below", 9e-5),
        (0.31, 0.39, "below", 0.39),
        (400.0, 613.0, "above", 400.0),
        (399.0, 613.0, "above", 400.0),
    ],
)
def test_readable_between(low: float, high: float, side: str, expected: float) -> None:
    r = readable_between(low, high, side)  # type: ignore[arg-type]
    assert r == pytest.approx(expected)
    assert (low <= r < high) if side == "above" else (low < r <= high)


def test_fisher_and_best_split_agree_with_hand_counts() -> None:
    # 5 bad of 5 in the region against 0 of 5 kept: p = 1 / C(10, 5).
    assert fisher_greater(5, 5, 5, 10) == pytest.approx(1 / 252)
    assert fisher_greater(0, 5, 5, 10) == pytest.approx(1.0)
    points = [(float(v), v > 5) for v in range(1, 11)]
    split = best_split(points, "above")
    assert split is not None and (split.bad, split.total, split.kept_total) == (5, 5, 5)
    assert 5 <= split.threshold < 6
    assert best_split([(v, not b) for v, b in points], "above") is None
    # Counts and rates pass (5 of 5 above, 1 of 4 kept) but p = 6 / 126: chance.
    lucky = [(float(v), v > 4 or v == 1) for v in range(1, 10)]
    assert fisher_greater(5, 5, 6, 9) == pytest.approx(6 / 126)
    assert best_split(lucky, "above") is None
    below = best_split([(v, not b) for v, b in points], "below")
    assert below is not None and 5 < below.threshold <= 6 and below.bad == 5


# --------------------------------------------------------------------------- a real study


@pytest.fixture(scope="module")
def mnist_data() -> Any:
    torch = pytest.importorskip("torch")
    from tests.conftest import mnist_root
    from workers.data import MnistNotFound, load_mnist

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/workers/conftest.py: one thread on shared cores
    try:
        yield load_mnist(mnist_root())
    except MnistNotFound as exc:
        pytest.skip(f"MNIST unavailable: {exc}")
    finally:
        torch.set_num_threads(before)


def run_sgd_lr_study(data: Any, n_trials: int) -> list[dict[str, Any]]:
    """A real in-memory Optuna study: sgd, lr log-uniform in [1e-3, 10], 512 images x 2
    epochs per trial, RandomSampler(seed=0); findings stored as user attrs (JSON)."""
    optuna = pytest.importorskip("optuna")
    from hpo.findings import check_trial
    from tests.workers.conftest import quick
    from workers.trainer import train

    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", 1e-3, 10.0, log=True)
        config = quick(optimizer="sgd", lr=lr, train_subset=512, epochs=2, val_size=1000)
        result = train(config, data)
        found = check_trial(result.history, result.status, result.diagnosis)
        trial.set_user_attr("findings", [f.model_dump(mode="json") for f in found])
        return result.objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=n_trials)
    states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.FAIL: "fail"}
    return [
        {"number": t.number, "state": states[t.state], "params": t.params, "value": t.value}
        | {"findings": t.user_attrs["findings"]}
        for t in study.trials
    ]


def test_real_optuna_study_with_a_diverging_lr_region_is_told_to_narrow_it(
    mnist_data: Any,
) -> None:
    # The reference trainer diverges for sgd lr >~ 1 (measured: 0.5 trains, 1.0 diverges
    # at batch 8), so the diagnosis must propose a high bound between the two regions.
    records = run_sgd_lr_study(mnist_data, n_trials=30)
    spec = {"space": {"lr": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}}
    proposals = {p.edit.path: p for p in diagnose_study(records, spec)}
    high = proposals["space.lr.high"]
    assert high.outcome == "diverged" and high.edit.old == 10.0
    assert 0.3 <= high.edit.new <= 2.0
    diverged = {r["number"] for r in records if any(f["kind"] == "diverged" for f in r["findings"])}
    above = [r for r in records if r["params"]["lr"] > high.edit.new]
    assert high.total == len(above) and high.bad == sum(r["number"] in diverged for r in above)
    assert high.bad >= 0.75 * high.total and high.bad >= MIN_REGION_BAD
    kept = [r for r in records if r["params"]["lr"] <= high.edit.new]
    assert sum(r["number"] in diverged for r in kept) <= 0.25 * len(kept)
    assert high.message.endswith(f"narrow lr to high: {high.edit.new:g}")
    # Measured: lr 1.2e-3 .. 3.7e-3 underfit (16 sgd steps barely move the loss), the next
    # sampled lr (0.034) trains: the low end is narrowed as well, and nothing else.
    assert set(proposals) == {"space.lr.high", "space.lr.low"}
    low = proposals["space.lr.low"]
    assert low.outcome == "underfitting" and low.edit.old == 1e-3
    assert 3e-3 <= low.edit.new <= 0.04 and low.bad == low.total >= MIN_REGION_BAD
