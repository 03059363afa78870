"""The privacy, fairness and robustness findings on real runs of the reference trainer:
a run that provokes each, and a healthy one that does not (small subsets: seconds)."""

from __future__ import annotations

from hpo.findings import FindingKind, check_trial
from hpo.responsible import AttackSettings
from tests.workers.conftest import quick
from workers.data import MnistData, Split
from workers.responsible.robustness import adversarial_accuracy
from workers.trainer import train


def kinds(result: object, final: dict[str, float] | None = None) -> set[FindingKind]:
    history, metrics = result.history, final or result.final  # type: ignore[attr-defined]
    return {f.kind for f in check_trial(history, final=metrics)}


def test_dp_noise_far_above_the_clip_norm_is_found_and_sane_noise_is_not(
    mnist: MnistData,
) -> None:
    base = {"hidden": 32, "optimizer": "adam", "lr": 0.005, "train_subset": 4000}
    loud = train(quick(**base, privacy={"noise_multiplier": 80.0, "max_grad_norm": 1.0}), mnist)
    assert FindingKind.DP_NOISE_TOO_HIGH in kinds(loud)
    sane = train(quick(**base, privacy={"noise_multiplier": 1.0, "max_grad_norm": 1.0}), mnist)
    assert FindingKind.DP_NOISE_TOO_HIGH not in kinds(sane)


def test_a_class_left_behind_by_a_skewed_split_is_found_and_a_balanced_run_is_not(
    mnist: MnistData,
) -> None:
    base = {"hidden": 128, "optimizer": "adam", "lr": 1e-3, "train_subset": 10000}
    skew = {"imbalance": {"classes": [3, 5], "keep_fraction": 0.02}}
    skewed = train(quick(**base, data=skew), mnist)
    assert FindingKind.CLASS_LEFT_BEHIND in kinds(skewed)
    balanced = train(quick(**base, class_metrics=True), mnist)
    assert "test_accuracy[3]" in balanced.final
    assert FindingKind.CLASS_LEFT_BEHIND not in kinds(balanced)


def test_a_robustness_cliff_is_found_at_a_strong_attack_and_not_at_a_mild_one(
    mnist: MnistData,
) -> None:
    result = train(quick(hidden=128, optimizer="adam", lr=1e-3, train_subset=5000), mnist)
    assert result.model is not None
    few = Split(mnist.test.x[:500], mnist.test.y[:500])
    for attack, cliff in (
        (AttackSettings(attack="pgd", epsilon=0.3, steps=10), True),
        (AttackSettings(attack="fgsm", epsilon=0.1), False),
    ):
        final = {**result.final, "adv_accuracy": adversarial_accuracy(result.model, few, attack)}
        assert (FindingKind.ROBUSTNESS_CLIFF in kinds(result, final)) is cliff, final
