"""Study spec validation (through the API: 422 naming the field) and define-by-run sampling.

Validation never touches the database, so one SQLite-backed app serves the
whole module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from hpo.spec import StudySpec, grid_search_space
from service.storage.samplers import make_sampler, suggest_params
from tests.conftest import Tokens, make_settings, mint_tokens
from tests.support import MNIST_SPACE, study_spec


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from service.app import create_app

    tmp: Path = tmp_path_factory.mktemp("spec")
    app = create_app(make_settings(f"sqlite:///{tmp / 'hpo.db'}", tmp))
    tokens = mint_tokens(app.state.ctx)
    with TestClient(app) as client:
        client.headers.update(Tokens.header(tokens.admin))
        yield client
    app.state.ctx.close()


def _spec(**changes: Any) -> dict[str, Any]:
    """A valid spec for the built-in trainer (TPE sampler), with ``changes``."""
    return study_spec(**{"name": "spec-check", "sampler": {"name": "tpe", "seed": 1}, **changes})


def _space(**params: Any) -> dict[str, Any]:
    return _spec(space=params)


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown sampler", _spec(sampler={"name": "annealing"}), "sampler.name"),
    ("unknown pruner", _spec(pruner={"name": "patience"}), "pruner.name"),
    (
        "low >= high",
        _space(lr={"type": "float", "low": 1.0, "high": 1.0}),
        "space.lr",
    ),
    ("int low >= high", _space(n={"type": "int", "low": 5, "high": 2}), "space.n"),
    (
        "log with low <= 0",
        _space(wd={"type": "float", "low": 0.0, "high": 0.1, "log": True}),
        "space.wd",
    ),
    (
        "log and step",
        _space(lr={"type": "float", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1}),
        "space.lr",
    ),
    (
        "condition on unknown parameter",
        _space(m={"type": "float", "low": 0, "high": 1, "when": {"nope": ["x"]}}),
        "space.m.when",
    ),
    (
        "condition on a later parameter",
        _space(
            m={"type": "float", "low": 0, "high": 1, "when": {"opt": ["sgd"]}},
            opt={"type": "categorical", "choices": ["sgd", "adam"]},
        ),
        "space.m.when",
    ),
    (
        "condition value not among choices",
        _space(
            opt={"type": "categorical", "choices": ["sgd", "adam"]},
            m={"type": "float", "low": 0, "high": 1, "when": {"opt": ["rmsprop"]}},
        ),
        "space.m.when.opt",
    ),
    (
        "condition lists no values",
        _space(
            opt={"type": "categorical", "choices": ["sgd", "adam"]},
            m={"type": "float", "low": 0, "high": 1, "when": {"opt": []}},
        ),
        "space.m.when",
    ),
    ("empty choices", _space(opt={"type": "categorical", "choices": []}), "space.opt.choices"),
    (
        "duplicate choices",
        _space(opt={"type": "categorical", "choices": ["sgd", "sgd"]}),
        "space.opt.choices",
    ),
    ("empty space", _spec(space={}), "space"),
    ("unknown parameter type", _space(x={"type": "complex", "low": 0, "high": 1}), "space.x"),
    (
        "unknown sampler option",
        _spec(sampler={"name": "tpe", "options": {"n_warmup": 3}}),
        "sampler",
    ),
    (
        "seed passed as sampler option",
        _spec(sampler={"name": "random", "options": {"seed": 3}}),
        "sampler",
    ),
    ("percentile pruner without percentile", _spec(pruner={"name": "percentile"}), "pruner"),
    (
        "bad pruner option value",
        _spec(pruner={"name": "median", "options": {"n_startup_trials": -1}}),
        "pruner",
    ),
    (
        "multi-objective with a pruner",
        _spec(
            directions=["maximize", "minimize"],
            objectives=["val_accuracy", "seconds"],
            pruner={"name": "median"},
        ),
        "pruner",
    ),
    (
        "objective count differs from directions",
        _spec(directions=["maximize", "minimize"], objectives=["a"]),
        "objectives",
    ),
    ("grid over a continuous float", _spec(sampler={"name": "grid"}), "space.lr"),
    ("extra top-level key", _spec(trials=10), "trials"),
    (
        "extra key in a parameter",
        _space(lr={"type": "float", "low": 0, "high": 1, "lg": 1}),
        "space.lr.lg",
    ),
    ("control characters in the name", _spec(name="bad\x1bname"), "name"),
    ("blank name", _spec(name="   "), "name"),
    ("empty name", _spec(name=""), "name"),
    ("name too long", _spec(name="n" * 129), "name"),
    ("slash in the name", _spec(name="a/b"), "name"),
    ("control character in a parameter name", _space(**{"l\nr": MNIST_SPACE["lr"]}), "space"),
    ("budget max_trials 0", _spec(budget={"max_trials": 0}), "budget.max_trials"),
    ("negative sampler seed", _spec(sampler={"name": "tpe", "seed": -1}), "sampler.seed"),
    ("typo in a fixed setting", _spec(fixed={"lrr": 0.1}), "fixed.lrr"),
    ("fixed value outside the schema", _spec(fixed={"dropout": 0.95}), "fixed.dropout"),
    (
        "setting target that does not exist",
        _space(lr_adam={"type": "float", "low": 1e-4, "high": 1e-2, "setting": "lrr"}),
        "space.lr_adam.setting",
    ),
    ("parameter that is not a setting", _space(lrate=MNIST_SPACE["lr"]), "space.lrate"),
    (
        "range outside the schema",
        _space(lr={"type": "float", "low": 0.0, "high": 1.0}),
        "space.lr.low",
    ),
    (
        "low_rank above the layer width",
        _spec(fixed={"hidden": 64, "low_rank": 128}),
        "fixed.low_rank",
    ),
    (
        "low_rank range above the narrowest width",
        _space(
            hidden={"type": "int", "low": 32, "high": 512, "log": True},
            low_rank={"type": "int", "low": 8, "high": 64},
        ),
        "space.low_rank.high",
    ),
    ("quantize int4", _spec(fixed={"quantize": "int4"}), "fixed.quantize"),
    ("prune_amount 1.0", _spec(fixed={"prune_amount": 1.0}), "fixed.prune_amount"),
    (
        "choice outside the schema",
        _space(optimizer={"type": "categorical", "choices": ["sgd", "lbfgs"]}),
        "space.optimizer.choices[1]",
    ),
]


@pytest.mark.parametrize(("case", "body", "field"), CASES, ids=[c[0] for c in CASES])
def test_invalid_spec_is_422_naming_the_field(
    api: TestClient, case: str, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/studies", json=body)
    assert response.status_code == 422, (case, response.text)
    detail = response.json()["detail"]
    if isinstance(detail, str):  # a check the server runs after parsing (Optuna's options)
        assert response.json()["field"].startswith(field), response.json()
        assert detail.startswith(field), detail
        return
    messages = [err["msg"] for err in detail]
    assert any(m.startswith(field) or f" {field}" in m for m in messages), messages
    # The error never echoes the submitted value back.
    assert "input" not in detail[0]


def test_settings_are_not_checked_for_other_workloads(api: TestClient) -> None:
    body = _spec(name="own-model", workload="my-resnet", fixed={"lrr": 0.1})
    body["space"]["anything"] = {"type": "int", "low": 1, "high": 3}
    response = api.post("/api/v1/studies", json=body)
    assert response.status_code == 201, response.text


def test_all_digit_name_is_rejected_by_the_domain(api: TestClient) -> None:
    response = api.post("/api/v1/studies", json=_spec(name="12345"))
    assert response.status_code == 422
    assert response.json()["field"] == "name"
    assert "digits" in response.json()["detail"]


def test_valid_spec_is_accepted(api: TestClient) -> None:
    response = api.post("/api/v1/studies", json=_spec(name="valid-spec"))
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["space"]["momentum"]["when"] == {"optimizer": ["momentum"]}


# --------------------------------------------------------------------------- sampling


def _toy_spec(name: str, space: dict[str, Any], sampler: dict[str, Any] | None = None) -> StudySpec:
    """A validated spec of the ``toy`` workload (no trainer checks) over ``space``."""
    extra = {} if sampler is None else {"sampler": sampler}
    return StudySpec.model_validate(study_spec(name, workload="toy", space=space, **extra))


def _conditional_spec() -> StudySpec:
    return _toy_spec(
        "conditional",
        sampler={"name": "random", "seed": 3},
        space={
            "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "nesterov"]},
            "momentum": {
                "type": "float",
                "low": 0.5,
                "high": 0.99,
                "when": {"optimizer": ["momentum", "nesterov"]},
            },
            "schedule": {"type": "categorical", "choices": ["constant", "step"]},
            "step_size": {"type": "int", "low": 1, "high": 5, "when": {"schedule": ["step"]}},
            "gamma": {
                "type": "float",
                "low": 0.1,
                "high": 0.9,
                "when": {"schedule": ["step"], "optimizer": ["sgd"]},
            },
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True, "setting": "lr"},
        },
    )


def test_suggest_params_samples_conditionals_only_when_they_hold() -> None:
    spec = _conditional_spec()
    study = optuna.create_study(sampler=make_sampler(spec, seed=3), direction="maximize")
    seen_branches: set[tuple[bool, bool]] = set()
    for _ in range(200):
        trial = study.ask()
        params = suggest_params(trial, spec)
        # What the sampler saw is exactly what was returned: skipped parameters are absent.
        assert trial.params == params
        has_momentum = params["optimizer"] in ("momentum", "nesterov")
        assert ("momentum" in params) == has_momentum
        assert ("step_size" in params) == (params["schedule"] == "step")
        both = params["schedule"] == "step" and params["optimizer"] == "sgd"
        assert ("gamma" in params) == both
        assert 1e-4 <= params["lr"] <= 1.0
        seen_branches.add((has_momentum, "step_size" in params))
        study.tell(trial, 0.5)
    assert seen_branches == {(True, True), (True, False), (False, True), (False, False)}


def test_suggest_params_skips_parameters_conditioned_on_a_skipped_one() -> None:
    spec = _toy_spec(
        "chain",
        sampler={"name": "random", "seed": 5},
        space={
            "batch_norm": {"type": "categorical", "choices": [False, True]},
            "bn_kind": {
                "type": "categorical",
                "choices": ["plain", "affine"],
                "when": {"batch_norm": [True]},
            },
            "bn_momentum": {
                "type": "float",
                "low": 0.1,
                "high": 0.9,
                "when": {"bn_kind": ["plain", "affine"]},
            },
        },
    )
    study = optuna.create_study(sampler=make_sampler(spec, seed=5))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        params = suggest_params(trial, spec)
        expected = (
            {"batch_norm", "bn_kind", "bn_momentum"} if params["batch_norm"] else {"batch_norm"}
        )
        assert set(params) == expected == set(trial.params)
        seen.add(params["batch_norm"])
        study.tell(trial, 0.0)
    assert seen == {False, True}


def test_grid_search_space_enumerates_every_kind() -> None:
    spec = _toy_spec(
        "grid",
        sampler={"name": "grid", "seed": 0},
        space={
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "depth": {"type": "int", "low": 1, "high": 5, "step": 2},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        },
    )
    grid = grid_search_space(spec.space)
    assert grid == {"opt": ["sgd", "adam"], "depth": [1, 3, 5], "dropout": [0.0, 0.1, 0.2, 0.3]}
    # The grid sampler built from the spec visits every point exactly once.
    study = optuna.create_study(sampler=make_sampler(spec, seed=0))
    points = set()
    for _ in range(2 * 3 * 4):
        trial = study.ask()
        points.add(tuple(suggest_params(trial, spec).values()))
        # With ask/tell, GridSampler calls study.stop() after the last point, which
        # raises outside optimize(); the trial is stored all the same.
        with contextlib.suppress(RuntimeError):
            study.tell(trial, 0.0)
    assert len(points) == 24
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.parametrize(
    "param",
    [
        {"type": "float", "low": 0.0, "high": 1.0},
        {"type": "int", "low": 1, "high": 64, "log": True},
        {"type": "int", "low": 0, "high": 20_000},
    ],
    ids=["continuous float", "log int", "too many points"],
)
def test_grid_search_space_refuses_what_it_cannot_enumerate(param: dict[str, Any]) -> None:
    spec = _toy_spec("g", space={"x": param})
    with pytest.raises(ValueError, match="space.x"):
        grid_search_space(spec.space)
