"""Privacy, fairness and robustness settings of the reference trainer (the schema only).

Four nested settings and two flat ones join :class:`hpo.settings.TrainConfig`:

* ``privacy: {mechanism: dp-sgd, noise_multiplier | target_epsilon, max_grad_norm, delta}``
  trains with DP-SGD (Opacus: per-sample gradients, Poisson sampling); the accountant's
  epsilon is reported every epoch (metric ``epsilon``).
* ``data: {imbalance: {classes, keep_fraction, seed}}`` trains on a deliberately skewed,
  seeded subset (the validation and test splits stay whole).
* ``class_balance: none | reweight | oversample`` mitigates the skew.
* ``robustness: {eval: {attack: fgsm | pgd, epsilon, steps}}`` measures adversarial
  accuracy after training: ``adv_accuracy`` on the test split (reported) and
  ``val_adv_accuracy`` on the validation split (what a study should optimize).
* ``adversarial_training: {epsilon, steps, ratio}`` trains on PGD examples (FGSM: steps 1).
* ``class_metrics: true | false | auto`` reports per-class accuracy (auto: with a skewed
  split or a mitigation; set it true to get them for any other trial).

Nested fields are searchable under a dotted setting name, e.g. a space parameter
``{type: float, low: 0.5, high: 2, setting: privacy.noise_multiplier}``.

Group metrics (any objective may report them, the dashboard draws them as bars):
``<metric>[<group>]`` per group, plus ``<metric>_worst`` (the lowest) and
``<metric>_gap`` (highest minus lowest); :func:`group_metrics` builds that shape.
Epsilons are in pixel units (images scaled to [0, 1]), as in the attack literature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ClassBalance = Literal["none", "reweight", "oversample"]
Attack = Literal["fgsm", "pgd"]
Accountant = Literal["rdp", "prv"]
#: Opacus's ways to clip per-sample gradients: ghost clipping computes each sample's
#: gradient norm without materialising the gradient (the same clipping, 20-40x faster on
#: the reference MLP on a CPU); hooks materialise every per-sample gradient.
GradSampleMode = Literal["ghost", "hooks"]
NUM_CLASSES = 10

#: Per-epoch metric of a DP-SGD run: the accountant's epsilon after that epoch.
EPSILON = "epsilon"
#: Final metrics of a robustness evaluation: accuracy on the attacked test split (reported)
#: and on the attacked validation split (the honest objective).
ADV_ACCURACY = "adv_accuracy"
VAL_ADV_ACCURACY = "val_adv_accuracy"
#: The reference trainer's group metric families (per class).
CLASS_FAMILIES = ("val_accuracy", "test_accuracy")
#: Final metrics the reference trainer adds with ``class_metrics`` (flat: the wire carries
#: scalars; per class on the test split, worst and gap on both splits).
CLASS_METRICS = (
    *(f"test_accuracy[{c}]" for c in range(NUM_CLASSES)),
    "val_accuracy_worst",
    "val_accuracy_gap",
    "test_accuracy_worst",
    "test_accuracy_gap",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class PrivacySettings(_Strict):
    """DP-SGD: clip each sample's gradient to ``max_grad_norm``, add Gaussian noise of
    ``noise_multiplier`` x that norm; or give ``target_epsilon`` and let Opacus pick the
    noise that reaches it after ``epochs`` (at ``delta``)."""

    mechanism: Literal["dp-sgd"] = "dp-sgd"
    noise_multiplier: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    target_epsilon: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] | None = None
    max_grad_norm: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-5
    accountant: Accountant = "rdp"
    grad_sample_mode: GradSampleMode = "ghost"

    @model_validator(mode="after")
    def _one_noise(self) -> PrivacySettings:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("give exactly one of noise_multiplier or target_epsilon")
        return self


class Imbalance(_Strict):
    """Keep only ``keep_fraction`` of the training images of ``classes`` (seeded)."""

    classes: Annotated[list[Annotated[int, Field(ge=0, lt=NUM_CLASSES)]], Field(min_length=1)]
    keep_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class DataSettings(_Strict):
    """How the training split is drawn (the validation and test splits stay whole)."""

    imbalance: Imbalance | None = None


class AttackSettings(_Strict):
    """An L-infinity attack: FGSM (one step) or PGD (``steps`` steps, random start)."""

    attack: Attack = "pgd"
    epsilon: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    steps: Annotated[int, Field(ge=1, le=100)] = 10


class RobustnessSettings(_Strict):
    """What the trained model is attacked with (on the test split)."""

    eval: AttackSettings = Field(default_factory=AttackSettings)


class AdversarialTraining(_Strict):
    """Replace ``ratio`` of each batch with PGD examples (``steps`` 1: FGSM) at ``epsilon``."""

    epsilon: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    steps: Annotated[int, Field(ge=1, le=20)] = 1
    ratio: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.5  # 0: none


#: Settings DP-SGD cannot run with, and why (the 422 at creation says it).
DP_CONFLICTS: dict[str, str] = {
    "batch_norm": "BatchNorm mixes the samples of a batch, so per-sample gradients "
    "(and DP-SGD's guarantee) do not exist",
    "optimizer": "gd takes full-batch steps; DP-SGD needs Poisson-sampled mini-batches",
    "l1": "the L1 penalty's gradient bypasses per-sample clipping",
    "finetune_epochs": "fine-tuning after compression would train without DP",
    "class_balance": "oversampling breaks Poisson sampling, which the accountant assumes",
    "adversarial_training": "adversarial training under DP-SGD is not supported",
    "prune_schedule": "gradual pruning is not supported under DP-SGD",
}


def dp_conflict(name: str, value: Any) -> bool:
    """Whether setting ``name`` = ``value`` cannot run under DP-SGD (see DP_CONFLICTS)."""
    if name == "batch_norm":
        return value is True
    if name == "optimizer":
        return bool(value == "gd")
    if name in ("l1", "finetune_epochs"):
        return isinstance(value, int | float) and value > 0
    if name == "class_balance":
        return bool(value == "oversample")
    if name == "prune_schedule":
        return bool(value == "gradual")
    if name == "adversarial_training":
        return value is not None
    return False


def dp_error(name: str, where: str) -> str:
    """The message of a DP conflict found at ``where`` (``fixed.batch_norm``...)."""
    return f"{where}: {name} cannot run with privacy (DP-SGD): {DP_CONFLICTS[name]}"


def group_metrics(metric: str, by_group: Mapping[str, float]) -> dict[str, float]:
    """The documented group shape: ``metric[group]`` per group, ``metric_worst`` and
    ``metric_gap``; e.g. ``trial.set_metrics(group_metrics("accuracy", {"a": .9, "b": .7}))``.
    """
    if not by_group:
        raise ValueError("group_metrics needs at least one group")
    values = {str(g): float(v) for g, v in by_group.items()}
    bad = [g for g, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"group {bad[0]!r} of {metric!r} is not a finite number")
    out = {f"{metric}[{g}]": v for g, v in values.items()}
    out[f"{metric}_worst"] = min(values.values())
    out[f"{metric}_gap"] = max(values.values()) - min(values.values())
    return out


def split_groups(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Group families in a metrics dict: ``{metric: {group: value}}`` (the inverse of
    :func:`group_metrics`, used by the dashboard and the diagnosis)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not key.endswith("]") or "[" not in key or isinstance(value, bool):
            continue
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        family, group = key[:-1].split("[", 1)
        out.setdefault(family, {})[group] = float(value)
    return out


def solo_reason(settings: Any) -> str | None:
    """Why a trial with these settings (a TrainConfig) must train solo, not in a pack."""
    if getattr(settings, "privacy", None) is not None:
        return "DP-SGD (privacy) needs per-sample gradients: trains solo, never in a pack"
    if getattr(settings, "adversarial_training", None) is not None:
        return "adversarial training crafts attacks per model: trains solo"
    data = getattr(settings, "data", None)
    if getattr(settings, "class_balance", "none") != "none" or (
        data is not None and data.imbalance is not None
    ):
        return "a skewed or rebalanced training split trains solo"
    return None


def privacy_conflict(candidates: list[tuple[str, str, Any]]) -> str | None:
    """The first setting a study spec may take that DP-SGD cannot run with, in words.

    ``candidates``: (where, setting, value) for every fixed value and every value a
    space parameter may take (``fixed.batch_norm``, ``space.bn.choices[1]``...).
    """

    def private(setting: str, value: Any) -> bool:
        return setting.startswith("privacy.") or (setting == "privacy" and value is not None)

    if not any(private(setting, value) for _, setting, value in candidates):
        return None
    for where, setting, value in candidates:
        name = setting.split(".")[0]
        if name == "adversarial_training" and "." in setting:
            value = value if value is not None else {}
        if name in DP_CONFLICTS and dp_conflict(name, value):
            return dp_error(name, where)
    return None
