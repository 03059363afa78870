"""The privacy, fairness and robustness views: a two-objective front in words on the study
page, per-class bars, the epsilon curve and the DP-solo note on the trial page (seeded
privacy study, SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from bench.synthetic import seeding
from bench.synthetic.demo import METRIC, Outcome
from hpo.spec import StudySpec
from service.dashboard.charts_responsible import tradeoff_words

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def private_run(settings: dict[str, Any], rng: random.Random) -> Outcome:
    """A DP-SGD run: more noise, less epsilon and less accuracy (synthetic, seeded)."""
    noise = float(settings["privacy.noise_multiplier"])
    eps = 8.0 / noise
    accuracy = 0.97 - 0.05 * noise / 8 - rng.random() * 0.01
    curve = [
        {"epoch": e, METRIC: accuracy - 0.02 * (3 - e), "epsilon": eps * e / 3} for e in (1, 2, 3)
    ]
    final = {f"test_accuracy[{c}]": accuracy - 0.01 * c for c in range(10)}
    final |= {"test_accuracy": accuracy, "epsilon": eps, "noise_multiplier": noise}
    return Outcome(
        TrialState.COMPLETE, accuracy, curve, values=[accuracy, eps], final_metrics=final
    )


@pytest.fixture
def privacy_id(ctx, workers) -> int:  # type: ignore[no-untyped-def]
    spec = StudySpec.model_validate(yaml.safe_load((STUDIES / "mnist-privacy.yaml").read_text()))
    return seeding.seed_bulk(ctx, spec, 24, seed=5, workers=workers, simulate=private_run)


def test_a_front_in_words_says_what_each_step_gains_and_costs() -> None:
    words = tradeoff_words(
        ["val_accuracy", "epsilon"], ["maximize", "minimize"], [[0.95, 6.0], [0.938, 3.1]]
    )
    assert words == ["+1.2 points of val_accuracy cost epsilon 3.1 → 6"]
    fair = tradeoff_words(
        ["val_accuracy", "val_accuracy_worst"], ["maximize", "maximize"], [[0.9, 0.8], [0.93, 0.7]]
    )
    assert fair == [
        "+3.0 points of val_accuracy cost 10.0 points of val_accuracy_worst (0.800 → 0.700)"
    ]
    assert tradeoff_words(["val_accuracy"], ["maximize"], [[0.9]]) == []


def test_the_study_page_puts_the_privacy_front_in_words(viewer, privacy_id) -> None:
    page = viewer.get(f"/dashboard/studies/{privacy_id}")
    assert page.status_code == 200
    assert 'id="tradeoffs"' in page.text
    lines = re.findall(r"<li>(\+[^<]+)</li>", page.text)
    assert lines and all(
        re.fullmatch(r"\+\d+\.\d points of val_accuracy cost epsilon \S+ → \S+", ln) for ln in lines
    )


def test_the_trial_page_shows_class_bars_the_epsilon_curve_and_that_dp_runs_solo(
    viewer, privacy_id
) -> None:
    page = viewer.get(f"/dashboard/studies/{privacy_id}/trials/0")
    assert page.status_code == 200
    text = page.text
    assert 'id="responsible"' in text and 'data-family="test_accuracy"' in text
    assert text.count("<rect ") == 10  # one bar per class
    assert 'id="epsilon-curve"' in text and text.count("<circle ") == 3  # one point per epoch
    assert 'id="dp-solo"' in text and "never in a pack" in text


def test_group_names_are_escaped(viewer, ctx, workers) -> None:  # type: ignore[no-untyped-def]
    def own(settings: dict[str, Any], rng: random.Random) -> Outcome:
        final = {"recall[<script>x</script>]": 0.5, "recall[b]": 0.9}
        return Outcome(TrialState.COMPLETE, 0.7, [{"epoch": 1, METRIC: 0.7}], final_metrics=final)

    spec = StudySpec.model_validate(yaml.safe_load((STUDIES / "quick.yaml").read_text()))
    study = seeding.seed_bulk(ctx, spec, 1, seed=1, workers=workers, simulate=own)
    text = viewer.get(f"/dashboard/studies/{study}/trials/0").text
    assert "<script>x</script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
