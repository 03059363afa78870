"""TrainConfig.from_settings: defaults, coercion and every rejection names its field."""

from __future__ import annotations

from typing import Any

import pytest

from hpo.settings import OPTIMIZERS, SettingsError, TrainConfig


def test_defaults_are_the_seed_settings() -> None:
    config = TrainConfig.from_settings({})
    assert (config.optimizer, config.lr, config.batch_size) == ("sgd", 0.01, 64)
    assert (config.hidden, config.depth, config.epochs) == (512, 1, 10)
    assert (config.lr_schedule, config.warmup_epochs, config.val_size) == ("constant", 0, 5000)
    assert config.compile == "auto" and config.divergence_factor == 10.0
    assert config.train_subset is None and config.seed == 0


def test_json_values_are_accepted_and_coerced() -> None:
    config = TrainConfig.from_settings(
        {"lr": 1, "weight_decay": 0, "hidden": 256.0, "batch_norm": True, "train_subset": None}
    )
    assert isinstance(config.lr, float) and config.lr == 1.0
    assert isinstance(config.hidden, int) and config.hidden == 256
    assert config.batch_norm is True and config.train_subset is None


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_name_is_accepted(optimizer: str) -> None:
    assert TrainConfig.from_settings({"optimizer": optimizer}).optimizer == optimizer


def test_seed_in_settings_overrides_the_argument() -> None:
    assert TrainConfig.from_settings({}, seed=7).seed == 7
    assert TrainConfig.from_settings({"seed": 3}, seed=7).seed == 3


def test_to_dict_round_trips() -> None:
    config = TrainConfig.from_settings({"optimizer": "adam", "lr": 3e-4, "dropout": 0.2})
    assert TrainConfig.from_settings(config.to_dict()) == config


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"lrr": 0.1}, "lrr", "unknown setting 'lrr'"),
        ({"lr": -1}, "lr", "lr must be > 0, got -1"),
        ({"lr": 0}, "lr", "lr must be > 0"),
        ({"lr": "fast"}, "lr", "must be a number"),
        ({"lr": True}, "lr", "must be a number"),
        ({"lr": float("nan")}, "lr", "finite"),
        ({"optimizer": "lbfgs"}, "optimizer", "one of gd, sgd"),
        ({"lr_schedule": "cyclic"}, "lr_schedule", "one of constant"),
        ({"dropout": 0.95}, "dropout", "dropout must be <= 0.8"),
        ({"depth": 0}, "depth", "depth must be >= 1"),
        ({"depth": 9}, "depth", "depth must be <= 8"),
        ({"hidden": 8193}, "hidden", "hidden must be <= 8192"),
        ({"hidden": 2.5}, "hidden", "must be an integer"),
        ({"epochs": 0}, "epochs", "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size", "batch_size must be >= 1"),
        ({"momentum": 1.0}, "momentum", "momentum must be < 1"),
        ({"beta1": 1.0}, "beta1", "beta1 must be < 1"),
        ({"beta2": 0}, "beta2", "beta2 must be > 0"),
        ({"eps": 0}, "eps", "eps must be > 0"),
        ({"gamma": 1.5}, "gamma", "gamma must be <= 1"),
        ({"step_size": 0}, "step_size", "step_size must be >= 1"),
        ({"warmup_epochs": -1}, "warmup_epochs", "warmup_epochs must be >= 0"),
        ({"weight_decay": -0.1}, "weight_decay", "weight_decay must be >= 0"),
        ({"l1": -1e-5}, "l1", "l1 must be >= 0"),
        ({"batch_norm": "yes"}, "batch_norm", "true or false"),
        ({"compile": "sometimes"}, "compile", "'auto'"),
        ({"train_subset": 0}, "train_subset", "train_subset must be >= 1"),
        ({"val_size": 0}, "val_size", "val_size must be >= 1"),
        ({"divergence_factor": 1}, "divergence_factor", "must be > 1"),
        ({"seed": -1}, "seed", "seed must be >= 0"),
        ({"batch_norm": True, "batch_size": 1}, "batch_size", ">= 2 with batch_norm"),
        ({"optimizer": "nesterov", "momentum": 0}, "momentum", "nesterov"),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(
    settings: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SettingsError) as info:
        TrainConfig.from_settings(settings)
    assert info.value.field == field
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_settings_must_be_a_dict() -> None:
    with pytest.raises(SettingsError):
        TrainConfig.from_settings([("lr", 0.1)])  # type: ignore[arg-type]
