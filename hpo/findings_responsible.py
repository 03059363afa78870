"""Privacy, fairness and robustness findings of one trial (hpo.findings' kinds).

They read a trial's final metrics (and, for privacy, its per-epoch history):

    dp_noise_too_high   epsilon (per epoch: a DP-SGD run), val_accuracy, train_loss,
                        noise_multiplier (final, optional)
    class_left_behind   any group family ``<metric>[<group>]`` (hpo.responsible's
                        group shape: the trainer's test_accuracy[c], an own objective's)
    robustness_cliff    adv_accuracy and test_accuracy (else val_adv_accuracy and
                        val_accuracy)

Thresholds were set from measured runs (tests/workers/test_findings_responsible_runs.py
runs the provoking and the healthy side): under DP-SGD (clip norm 1) the reference MLP
reaches 0.87 test accuracy at epsilon 8 after 2 epochs on 10k images and 0.4-0.7 after
one short epoch at noise 1, but stays at chance (0.09-0.13) at noise 50-100; a
balanced run on 10k images has its worst class 7 points below the class mean (on 5k:
11), a split that keeps 5 % of two digits leaves them 80+ points below; a plain MLP
keeps 0.18-0.27 FGSM/PGD accuracy at epsilon 0.1 and 0.00 PGD accuracy at epsilon 0.3.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from hpo.findings import Finding, FindingKind, History, Severity, evidence_of
from hpo.responsible import split_groups

#: A DP-SGD run whose validation accuracy ends below this has collapsed to near chance
#: (0.1): noise drowned the clipped gradient.
DP_COLLAPSE_ACCURACY = 0.3
#: A group this far (absolute, in accuracy) below the mean of its family's groups is
#: left behind.
GROUP_GAP = 0.10
#: Adversarial accuracy at or under this, while the clean accuracy is at least
#: CLIFF_CLEAN: the model is accurate and not robust at all.
CLIFF_ADVERSARIAL = 0.05
CLIFF_CLEAN = 0.8


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def check_dp_noise(h: History, final: Mapping[str, Any]) -> Finding | None:
    """A DP-SGD run (epsilon reported) whose accuracy collapsed."""
    eps = h.series("epsilon")
    accuracy = _num(final, "val_accuracy") or h.last("val_accuracy")
    if not eps or accuracy is None or accuracy >= DP_COLLAPSE_ACCURACY:
        return None
    noise = _num(final, "noise_multiplier") or h.last("noise_multiplier")
    said = f"noise multiplier {noise:.3g}" if noise is not None else "the noise"
    return Finding(
        kind=FindingKind.DP_NOISE_TOO_HIGH,
        epoch=eps[0][0],
        message=f"Under DP-SGD, validation accuracy ended at {accuracy:.3f} (epsilon "
        f"{eps[-1][1]:.3g}): {said} drowns the clipped gradient; lower the noise (a larger "
        "epsilon), raise the batch size or the clip norm.",
        evidence=evidence_of(
            {"val_accuracy": accuracy, "epsilon": eps[-1][1], "noise_multiplier": noise},
            {"train_loss": h.last("train_loss"), "threshold": DP_COLLAPSE_ACCURACY},
        ),
        severity=Severity.ERROR,
    )


def check_class_left_behind(final: Mapping[str, Any]) -> Finding | None:
    """The group furthest below its family's mean, when more than GROUP_GAP below it."""
    worst: tuple[float, str, str, float, float] | None = None
    for family, groups in sorted(split_groups(final).items()):
        if len(groups) < 2:
            continue
        mean = statistics.fmean(groups.values())
        group, value = min(groups.items(), key=lambda item: item[1])
        if mean - value > GROUP_GAP and (worst is None or mean - value > worst[0]):
            worst = (mean - value, family, group, value, mean)
    if worst is None:
        return None
    gap, family, group, value, mean = worst
    return Finding(
        kind=FindingKind.CLASS_LEFT_BEHIND,
        epoch=None,
        message=f"{family} of group {group} is {value:.3f}, {100 * gap:.1f} points below the "
        f"mean of its groups ({mean:.3f}): a class is left behind; try class_balance "
        "reweight or oversample.",
        evidence={
            "family": family,
            "group": group,
            "value": value,
            "mean": mean,
            "gap": gap,
            "threshold": GROUP_GAP,
        },
        severity=Severity.WARNING,
    )


def check_robustness_cliff(final: Mapping[str, Any]) -> Finding | None:
    """Adversarial accuracy near 0 while the clean accuracy is high."""
    for adv_key, clean_key in (
        ("adv_accuracy", "test_accuracy"),
        ("val_adv_accuracy", "val_accuracy"),
    ):
        adversarial, clean = _num(final, adv_key), _num(final, clean_key)
        if adversarial is None or clean is None:
            continue
        if adversarial > CLIFF_ADVERSARIAL or clean < CLIFF_CLEAN:
            return None
        return Finding(
            kind=FindingKind.ROBUSTNESS_CLIFF,
            epoch=None,
            message=f"Clean accuracy {clean:.3f} but {adversarial:.3f} under attack "
            f"({adv_key}): a robustness cliff; try adversarial_training.",
            evidence={
                adv_key: adversarial,
                clean_key: clean,
                "threshold_adversarial": CLIFF_ADVERSARIAL,
                "threshold_clean": CLIFF_CLEAN,
            },
            severity=Severity.WARNING,
        )
    return None


def check_responsible(h: History, final: Mapping[str, Any] | None) -> list[Finding]:
    """The three findings of this module that hold for one trial."""
    final = final or {}
    found = [
        check_dp_noise(h, final),
        check_class_left_behind(final),
        check_robustness_cliff(final),
    ]
    return [f for f in found if f is not None]
