"""hpo.findings_responsible on hand-made metrics: each finding fires on its case only."""

from __future__ import annotations

from hpo.findings import FindingKind, check_trial
from hpo.responsible import group_metrics

DP_HISTORY = [
    {"epoch": 1, "train_loss": 2.30, "val_loss": 2.30, "val_accuracy": 0.11, "epsilon": 0.4},
    {"epoch": 2, "train_loss": 2.29, "val_loss": 2.30, "val_accuracy": 0.12, "epsilon": 0.6},
]
PER_CLASS = {str(c): 0.96 for c in range(10)}


def kinds(history: list[dict[str, float]], final: dict[str, float]) -> set[FindingKind]:
    return {f.kind for f in check_trial(history, final=final)}


def test_dp_noise_too_high_fires_only_for_a_collapsed_private_run() -> None:
    found = check_trial(DP_HISTORY, final={"val_accuracy": 0.12, "noise_multiplier": 60.0})
    dp = [f for f in found if f.kind == FindingKind.DP_NOISE_TOO_HIGH]
    assert len(dp) == 1 and dp[0].evidence["noise_multiplier"] == 60.0
    assert "0.120" in dp[0].message and dp[0].epoch == 1
    healthy = [{**h, "val_accuracy": 0.9} for h in DP_HISTORY]
    assert FindingKind.DP_NOISE_TOO_HIGH not in kinds(healthy, {"val_accuracy": 0.9})
    not_private = [{k: v for k, v in h.items() if k != "epsilon"} for h in DP_HISTORY]
    assert FindingKind.DP_NOISE_TOO_HIGH not in kinds(not_private, {"val_accuracy": 0.12})


def test_class_left_behind_names_the_group_more_than_10_points_below_the_mean() -> None:
    behind = group_metrics("test_accuracy", {**PER_CLASS, "5": 0.70})
    found = [f for f in check_trial([], final=behind) if f.kind == FindingKind.CLASS_LEFT_BEHIND]
    assert len(found) == 1
    assert found[0].evidence["group"] == "5" and found[0].evidence["family"] == "test_accuracy"
    assert found[0].evidence["gap"] > 0.2
    close = group_metrics("test_accuracy", {**PER_CLASS, "5": 0.88})  # 7 points below
    assert FindingKind.CLASS_LEFT_BEHIND not in kinds([], close)
    own = group_metrics("recall", {"group a": 0.9, "group b": 0.9, "group c": 0.5})
    assert FindingKind.CLASS_LEFT_BEHIND in kinds([], own)  # an own objective's groups


def test_robustness_cliff_needs_high_clean_and_near_zero_adversarial_accuracy() -> None:
    cliff = {"test_accuracy": 0.95, "adv_accuracy": 0.01}
    assert FindingKind.ROBUSTNESS_CLIFF in kinds([], cliff)
    assert FindingKind.ROBUSTNESS_CLIFF not in kinds([], {**cliff, "adv_accuracy": 0.3})
    assert FindingKind.ROBUSTNESS_CLIFF not in kinds([], {**cliff, "test_accuracy": 0.5})
    validation = {"val_accuracy": 0.9, "val_adv_accuracy": 0.0}
    assert FindingKind.ROBUSTNESS_CLIFF in kinds([], validation)


def test_no_responsible_finding_without_final_metrics() -> None:
    assert not kinds(DP_HISTORY[:0], {})
