"""Every shipped study spec is valid through the API's code path, and every
parameter set its sampler can produce is accepted by the reference trainer."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from hpo.settings import SettingsError, TrainConfig
from hpo.spec import StudySpec, to_settings
from service.storage.samplers import suggest_params

STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))
EXPECTED = {
    "mnist-optimizers",
    "mnist-learning-rate",
    "mnist-regularization",
    "mnist-architecture",
    "mnist-compression",
    "mnist-compression-cpu",
    "mnist-privacy",
    "mnist-fairness",
    "mnist-robustness",
    "quick",
}


def test_all_expected_specs_are_shipped() -> None:
    assert {p.stem for p in STUDIES} == EXPECTED


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_spec_validates_and_documents_itself(path: Path) -> None:
    text = path.read_text()
    assert text.lstrip().startswith("#"), "each spec starts with a comment saying what it shows"
    spec = StudySpec.model_validate(yaml.safe_load(text))
    assert spec.name == path.stem


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_sampled_settings_are_accepted_by_the_trainer(path: Path) -> None:
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_params: set[str] = set()
    for _ in range(40):
        trial = study.ask()
        params = suggest_params(trial, spec)
        seen_params |= set(params)
        settings = {**spec.fixed, **to_settings(spec, params)}
        try:
            TrainConfig.from_settings(settings, seed=trial.number)
        except SettingsError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path.name}: trainer rejects {settings}: {exc}")
        study.tell(trial, 0.5)
    # Conditional parameters are really exercised (not all skipped).
    assert seen_params == set(spec.space)


def test_optimizer_study_gives_each_optimizer_its_own_lr_range() -> None:
    spec = StudySpec.model_validate(
        yaml.safe_load((STUDIES[0].parent / "mnist-optimizers.yaml").read_text())
    )
    optimizers = set(spec.space["optimizer"].choices)  # type: ignore[union-attr]
    covered = set()
    for name, param in spec.space.items():
        if param.setting == "lr":
            assert param.log, f"{name} must be log-uniform"
            covered |= set((param.when or {}).get("optimizer", []))
    assert covered == optimizers
