"""workers.responsible on real MNIST: DP-SGD's epsilon against Opacus's accountant, per-class
metrics against a hand count, the seeded skew and its mitigations, attacks that lower
accuracy (small subsets and a narrow model: these run in seconds)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from hpo.responsible import AttackSettings, Imbalance, group_metrics, split_groups
from hpo.settings import SettingsError, TrainConfig
from tests.workers.conftest import quick
from workers.data import MnistData, Split
from workers.packs.keys import packable
from workers.responsible import fairness
from workers.responsible.robustness import adversarial_accuracy
from workers.trainer import train

SMALL = {"hidden": 32, "optimizer": "sgd", "lr": 0.1}


def test_epsilon_per_epoch_is_opacus_accountant_for_the_same_rate_noise_and_steps(
    mnist: MnistData,
) -> None:
    privacy = {"noise_multiplier": 1.3, "max_grad_norm": 1.0, "delta": 1e-5}
    config = quick(**SMALL, train_subset=512, epochs=2, privacy=privacy)
    result = train(config, mnist)
    assert result.status == "completed" and result.optimizer_steps == 16  # 512 / 64 per epoch
    accountant = RDPAccountant()  # stepped by hand: q = 64 / 512, sigma 1.3
    for epoch, metrics in enumerate(result.history, start=1):
        for _ in range(8):
            accountant.step(noise_multiplier=1.3, sample_rate=1 / 8)
        expected = accountant.get_epsilon(delta=1e-5)
        assert metrics["epsilon"] == pytest.approx(expected, rel=1e-9), epoch
    assert result.history[1]["epsilon"] > result.history[0]["epsilon"] > 0
    assert result.final["epsilon"] == result.history[-1]["epsilon"]


def test_target_epsilon_sets_the_noise_that_spends_it(mnist: MnistData) -> None:
    config = quick(**SMALL, train_subset=512, epochs=2, privacy={"target_epsilon": 3.0})
    result = train(config, mnist)
    assert result.final["epsilon"] == pytest.approx(3.0, rel=0.05)
    assert result.final["epsilon"] <= 3.0 + 1e-6
    assert result.final["noise_multiplier"] > 0


def test_dp_noise_costs_accuracy_and_the_log_says_it_trains_solo(
    mnist: MnistData, caplog: pytest.LogCaptureFixture
) -> None:
    plain = train(quick(**SMALL), mnist)
    with caplog.at_level(logging.INFO, logger="workers.responsible"):
        private = {"noise_multiplier": 50.0, "max_grad_norm": 1.0}
        loud = train(quick(**SMALL, privacy=private), mnist)
    assert "DP-SGD: noise_multiplier 50" in caplog.text and "never in a pack" in caplog.text
    assert plain.objective is not None and loud.objective is not None
    assert loud.objective < plain.objective - 0.2  # noise 50 x the clip norm drowns the signal


def test_settings_dp_cannot_run_are_refused_naming_the_field() -> None:
    for bad, field in (
        ({"batch_norm": True}, "batch_norm"),
        ({"optimizer": "gd"}, "optimizer"),
        ({"class_balance": "oversample"}, "class_balance"),
        ({"adversarial_training": {"epsilon": 0.1}}, "adversarial_training"),
    ):
        with pytest.raises(SettingsError) as err:
            TrainConfig.from_settings({"privacy": {"noise_multiplier": 1.0}, **bad})
        assert err.value.field == field and "DP-SGD" in str(err.value)


def test_private_and_rebalanced_trials_never_join_a_pack() -> None:
    assert packable(quick())
    assert not packable(quick(privacy={"noise_multiplier": 1.0}))
    assert not packable(quick(class_balance="reweight"))
    assert not packable(quick(adversarial_training={"epsilon": 0.1}))


# --------------------------------------------------------------------------- fairness


def test_per_class_accuracy_matches_a_hand_count() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2, 2, 0, 1])
    by_class = fairness.per_class_accuracy(y_true, y_pred)
    assert by_class == {"0": 1 / 2, "1": 2 / 3, "2": 2 / 4}
    metrics = group_metrics("test_accuracy", by_class)
    assert metrics["test_accuracy_worst"] == 0.5
    assert metrics["test_accuracy_gap"] == pytest.approx(2 / 3 - 1 / 2)
    assert split_groups(metrics) == {"test_accuracy": by_class}


def test_trainer_class_metrics_match_a_count_of_its_own_predictions(mnist: MnistData) -> None:
    result = train(quick(**SMALL, class_metrics=True), mnist)
    assert result.model is not None
    test = mnist.test
    with torch.inference_mode():
        result.model.eval()
        predicted = result.model(test.x).argmax(dim=1)
    for c in range(10):
        members = test.y == c
        hand = (predicted[members] == c).sum().item() / members.sum().item()
        assert result.final[f"test_accuracy[{c}]"] == pytest.approx(hand)
    per_class = [result.final[f"test_accuracy[{c}]"] for c in range(10)]
    assert result.final["test_accuracy_worst"] == min(per_class)
    assert result.final["test_accuracy_gap"] == pytest.approx(max(per_class) - min(per_class))


def test_skew_is_seeded_by_the_imbalance_not_the_trial() -> None:
    y = torch.arange(1000) % 10
    split = Split(torch.arange(1000, dtype=torch.float32).unsqueeze(1), y)
    imbalance = Imbalance(classes=[3, 5], keep_fraction=0.1, seed=7)
    a, b = fairness.skew(split, imbalance), fairness.skew(split, imbalance)
    assert torch.equal(a.x, b.x)
    counts = torch.bincount(a.y, minlength=10).tolist()
    assert counts[3] == counts[5] == 10 and counts[0] == 100 and len(a) == 820
    other = fairness.skew(split, imbalance.model_copy(update={"seed": 8}))
    assert not torch.equal(a.x, other.x)


def test_mitigations_lift_the_worst_class_on_a_skewed_split(mnist: MnistData) -> None:
    skewed = {"data": {"imbalance": {"classes": [3, 5], "keep_fraction": 0.05}}}
    worst = {}
    for balance in ("none", "reweight", "oversample"):
        config = quick(**SMALL, train_subset=3000, epochs=2, class_balance=balance, **skewed)
        worst[balance] = train(config, mnist).final["val_accuracy_worst"]
    assert worst["none"] < 0.3  # classes 3 and 5 left behind
    assert worst["reweight"] > worst["none"] + 0.2
    assert worst["oversample"] > worst["none"] + 0.2


# --------------------------------------------------------------------------- robustness


def test_attacks_lower_accuracy_and_pgd_is_at_least_as_strong_as_fgsm(mnist: MnistData) -> None:
    result = train(quick(**SMALL), mnist)
    assert result.model is not None
    few = Split(mnist.test.x[:500], mnist.test.y[:500])
    clean = adversarial_accuracy(result.model, few, AttackSettings(attack="fgsm", epsilon=1e-6))
    fgsm = adversarial_accuracy(result.model, few, AttackSettings(attack="fgsm", epsilon=0.1))
    pgd = adversarial_accuracy(
        result.model, few, AttackSettings(attack="pgd", epsilon=0.1, steps=10)
    )
    assert clean > 0.75
    assert fgsm < clean - 0.3
    assert pgd <= fgsm + 0.01  # PGD's steps include FGSM's direction: never weaker


def test_adversarial_training_raises_adversarial_accuracy(mnist: MnistData) -> None:
    attack = {"eval": {"attack": "fgsm", "epsilon": 0.1}}
    plain = train(quick(**SMALL, robustness=attack), mnist)
    trained = train(
        quick(**SMALL, robustness=attack, adversarial_training={"epsilon": 0.1, "ratio": 0.5}),
        mnist,
    )
    assert math.isfinite(plain.final["adv_accuracy"])
    assert trained.final["adv_accuracy"] > plain.final["adv_accuracy"] + 0.03


def test_ghost_clipping_takes_the_same_steps_as_materialised_per_sample_gradients(
    mnist: MnistData,
) -> None:
    weights = []
    for mode in ("ghost", "hooks"):
        privacy = {"noise_multiplier": 0.0, "max_grad_norm": 0.05, "grad_sample_mode": mode}
        result = train(quick(**SMALL, train_subset=512, privacy=privacy), mnist)
        assert result.model is not None
        weights.append(torch.cat([p.detach().flatten() for p in result.model.parameters()]))
    plain = train(quick(**SMALL, train_subset=512), mnist)
    assert plain.model is not None
    unclipped = torch.cat([p.detach().flatten() for p in plain.model.parameters()])
    assert torch.allclose(weights[0], weights[1], atol=1e-5)
    assert not torch.allclose(weights[0], unclipped, atol=1e-3)  # clipping changed the steps
