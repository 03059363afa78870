"""``hpo.Trial`` is a complete ``optuna.trial.Trial``: the same public surface, ``trial.study``
served through the lease, constraints reaching Optuna, the deprecated suggests warning.

Against a live server (uvicorn on a free port) with real HTTP; the trial is built as
the worker builds it (:func:`hpo.trial.new_trial`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import optuna
import pytest

import hpo
from hpo.optuna_compat import LeaseStorage, ReadOnlyStudy
from hpo.protocol import CompleteRequest, LeaseRequest, ReportRequest, WorkerRegistration
from hpo.transport import ApiError, RetryPolicies
from hpo.trial import Trial, new_trial
from tests.support import LiveApp, live_app, study_spec

XY = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "n": {"type": "int", "low": 1, "high": 8, "log": True},
    "c": {"type": "categorical", "choices": ["a", "b"]},
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live_app(tmp_path_factory.mktemp("surface")) as server:
        yield server


@pytest.fixture
def worker(live: LiveApp) -> Iterator[tuple[hpo.Client, str]]:
    with hpo.Client(live.url, live.tokens.worker, policies=RetryPolicies.interactive()) as c:
        info = c.register(WorkerRegistration(hostname="box", workloads=["toy"]))
        yield c, info.worker_id


def admin(live: LiveApp) -> hpo.Client:
    return hpo.Client(live.url, live.tokens.admin, policies=RetryPolicies.interactive())


def lease(worker: tuple[hpo.Client, str], study: str) -> Trial:
    client, worker_id = worker
    spec = client.lease(LeaseRequest(worker_id=worker_id, studies=[study])).trial
    assert spec is not None
    return new_trial(client, spec)


def leased_toy_trial(live: LiveApp, worker: tuple[hpo.Client, str], study: str) -> Trial:
    """A new two-trial study ``study`` of the toy workload over ``XY``; its first trial, leased."""
    with admin(live) as c:
        c.create_study(study_spec(study, workload="toy", space=XY, budget={"max_trials": 2}))
    return lease(worker, study)


def public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_public_surface_is_optunas() -> None:
    # every public name of the installed Optuna's trial, plus what Optuna's __init__ sets
    wanted = public(optuna.trial.Trial) | {"study", "storage", "relative_search_space"}
    missing = sorted(n for n in wanted if not hasattr(Trial, n))
    assert not missing, f"hpo.Trial lacks Optuna's {missing}"
    assert hasattr(Trial, "_trial_id")


def test_the_worker_trial_is_an_optuna_trial(live: LiveApp, worker: Any) -> None:
    trial = leased_toy_trial(live, worker, "inst")
    assert isinstance(trial, optuna.trial.Trial) and isinstance(trial, Trial)
    trial._client.complete(trial.spec.lease_id, CompleteRequest(value=0.5))


def finish(trial: Trial, value: float) -> None:
    trial._client.complete(trial.spec.lease_id, CompleteRequest(value=value))


def test_study_view_reads_as_optuna_load_study(live: LiveApp, worker: Any) -> None:
    with admin(live) as c:
        c.create_study(study_spec("view", workload="toy", space=XY, direction="minimize"))
    for value in (0.3, 0.1, 0.7):
        finish(lease(worker, "view"), value)
    trial = lease(worker, "view")
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.25, step=1)
    trial.set_user_attr("note", "mine")

    study = trial.study
    direct = optuna.load_study(study_name="view", storage=live.ctx.store.url)
    assert study.study_name == "view"
    assert study.direction == optuna.study.StudyDirection.MINIMIZE == direct.direction
    assert study.best_value == pytest.approx(0.1) == direct.best_value
    assert study.best_trial.number == direct.best_trial.number
    assert study.best_params == direct.best_params
    assert [t.number for t in study.trials] == [t.number for t in direct.trials]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    [own] = [t for t in study.trials if t.number == trial.number]  # current, not as fetched
    assert own.state == optuna.trial.TrialState.RUNNING
    assert own.params == {"x": x} and own.intermediate_values == {1: 0.25}
    assert own.user_attrs["note"] == "mine"
    frame = study.trials_dataframe()
    assert len(frame) == 4 and "params_x" in frame.columns
    assert trial.storage is study._storage and isinstance(trial.storage, LeaseStorage)
    assert trial.storage.get_trial(trial._trial_id).number == trial.number
    with pytest.raises(ReadOnlyStudy, match="hpo.Client"):
        study.ask()
    finish(trial, 0.9)


def test_distributions_user_attrs_and_start(live: LiveApp, worker: Any) -> None:
    with admin(live) as c:
        c.create_study(study_spec("dists", workload="toy", space=XY))
    trial = lease(worker, "dists")
    trial.suggest_int("n", 1, 8, log=True)
    trial.suggest_categorical("c", ["a", "b"])
    assert trial.distributions == {
        "n": optuna.distributions.IntDistribution(1, 8, log=True),
        "c": optuna.distributions.CategoricalDistribution(["a", "b"]),
    }
    assert trial.relative_params == trial.spec.params  # declared: sampled at lease time
    attrs = trial.user_attrs
    attrs["x"] = 1  # a copy, as Optuna's
    assert "x" not in trial.user_attrs
    assert trial.datetime_start is not None and trial.datetime_start.tzinfo is None
    finish(trial, 0.5)


def test_report_checks_as_optuna() -> None:
    trial = Trial(None, _spec_stub())
    trial.control.drop.clear()
    with pytest.raises(TypeError, match="supposed to be a float"):
        trial.report("high", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        trial.report(1.0, -1)


def _spec_stub() -> Any:
    from datetime import datetime

    from hpo.protocol import TrialSpec

    return TrialSpec(
        lease_id="l",
        trial_id=1,
        trial_number=0,
        study_name="s",
        attempt=1,
        params={},
        space={},
        objective="value",
        direction="maximize",
        seed=0,
        lease_expires_at=datetime.now(UTC),
        heartbeat_interval_s=1.0,
    )


def test_deprecated_suggests_warn_as_optuna(live: LiveApp, worker: Any) -> None:
    with admin(live) as c:
        c.create_study(study_spec("old", workload="toy", space={}, budget={"max_trials": 2}))
    trial = lease(worker, "old")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = trial.suggest_uniform("a", 0.0, 1.0)
        b = trial.suggest_loguniform("b", 1e-3, 1.0)
        q = trial.suggest_discrete_uniform("q", 0.0, 1.0, 0.25)
    messages = [str(w.message) for w in caught if w.category is FutureWarning]
    assert len(messages) == 3 and "suggest_uniform has been deprecated in v3.0.0" in messages[0]
    assert 0 <= a <= 1 and 1e-3 <= b <= 1 and q in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert trial.distributions["b"] == optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
    finish(trial, a)


def test_set_constraint_reaches_optuna_best_trials(live: LiveApp, worker: Any) -> None:
    with admin(live) as c:
        c.create_study(
            study_spec(
                "cons",
                workload="toy",
                space=XY,
                directions=["maximize", "minimize"],
                objectives=["acc", "size"],
            )
        )
    for acc, size, violation in ((0.9, 5.0, 1.0), (0.8, 2.0, -1.0), (0.7, 1.0, 0.0)):
        trial = lease(worker, "cons")
        trial.set_constraint("size_cap", violation)
        with pytest.warns(UserWarning, match="already set"):
            trial.set_constraint("size_cap", 99.0)
        assert trial.constraints == {"size_cap": violation}
        trial._client.complete(trial.spec.lease_id, CompleteRequest(values=[acc, size]))
    direct = optuna.load_study(study_name="cons", storage=live.ctx.store.url)
    assert [t.constraints for t in direct.trials] == [
        {"size_cap": 1.0},
        {"size_cap": -1.0},
        {"size_cap": 0.0},
    ]
    # the infeasible (0.9, 5.0) would be on the front without its constraint
    assert sorted(t.number for t in direct.best_trials) == [1, 2]


def test_constraint_checks(live: LiveApp, worker: Any) -> None:
    trial = leased_toy_trial(live, worker, "cons2")
    with pytest.raises(ValueError, match="NaN is not allowed"):
        trial.set_constraint("c", float("nan"))
    with pytest.raises(TypeError, match="supposed to be a float"):
        trial.set_constraint("c", "x")  # type: ignore[arg-type]
    with pytest.raises(ApiError) as refused:  # only constraints: system attributes
        trial.set_system_attr_now("fixed_params", {"x": 1})
    assert refused.value.status_code == 422 and "system_attrs.fixed_params" in str(refused.value)
    finish(trial, 0.1)
    with pytest.raises(ApiError) as late:  # the lease is over
        trial.set_constraint("late", 1.0)
    assert late.value.status_code == 409


def test_declared_constraints_from_final_metrics(live: LiveApp, worker: Any) -> None:
    with admin(live) as c:
        c.create_study(
            study_spec("small", workload="toy", space=XY, constraints={"n_params": {"max": 100}})
        )
    for n_params in (50, 500):
        trial = lease(worker, "small")
        body = CompleteRequest(value=0.5, metrics={"n_params": n_params})
        trial._client.complete(trial.spec.lease_id, body)
    trial = lease(worker, "small")
    trial._client.complete(trial.spec.lease_id, CompleteRequest(value=0.6))  # no metric
    direct = optuna.load_study(study_name="small", storage=live.ctx.store.url)
    assert [t.constraints for t in direct.trials] == [
        {"n_params": -50.0},
        {"n_params": 400.0},
        {"n_params": 1.0},
    ]
    assert direct.best_trial.number == 0  # the feasible one, though trial 2 scored higher
    [cached] = [s for s in live.ctx.store._studies.values() if s.spec.name == "small"]
    seen = cached.study.get_trials(deepcopy=False)  # what the study's sampler sees
    assert [t.constraints for t in seen] == [t.constraints for t in direct.trials]


def test_declared_constraints_are_checked(live: LiveApp) -> None:
    with admin(live) as c, pytest.raises(ApiError) as bad:
        c.create_study(
            study_spec(
                "bad", workload="toy", space=XY, constraints={"n_params": {"max": 1, "min": 0}}
            )
        )
    assert bad.value.status_code == 422 and "constraints" in str(bad.value)


def test_report_twice_keeps_the_first_and_sends_once(live: LiveApp, worker: Any) -> None:
    trial = leased_toy_trial(live, worker, "twice")
    trial.report(0.5, 1)
    trial.report(0.9, 1)
    assert trial.intermediate_values == {1: 0.5}
    trial._client.report(trial.spec.lease_id, ReportRequest(step=2, value=0.4))
    finish(trial, 0.5)
    direct = optuna.load_study(study_name="twice", storage=live.ctx.store.url)
    assert direct.trials[0].intermediate_values == {1: 0.5, 2: 0.4}


def test_optuna_upload_artifact_through_the_trial(
    live: LiveApp, worker: Any, tmp_path: Path
) -> None:
    trial = leased_toy_trial(live, worker, "arts")
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00weights" * 100)
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=trial.artifact_store, file_path=str(path), study_or_trial=trial
    )
    again = trial.upload_artifact(path, artifact_id=artifact_id)  # a retry: the same answer
    assert again.artifact_id == artifact_id
    finish(trial, 0.5)
    direct = optuna.load_study(study_name="arts", storage=live.ctx.store.url)
    [meta] = optuna.artifacts.get_all_artifact_meta(direct.trials[0], storage=direct._storage)
    assert meta.artifact_id == artifact_id and meta.filename == "weights.bin"
    with trial.artifact_store.open_reader(artifact_id) as reader:
        assert reader.read() == path.read_bytes()
    with admin(live) as c:
        [listed] = c.artifacts(trial._trial_id)
        assert listed.artifact_id == artifact_id and listed.filename == "weights.bin"


def test_a_chosen_artifact_id_taken_by_another_file_is_refused(
    live: LiveApp, worker: Any, tmp_path: Path
) -> None:
    trial = leased_toy_trial(live, worker, "arts2")
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    trial.upload_artifact(tmp_path / "a", artifact_id="fixed-id")
    with pytest.raises(ApiError) as taken:
        trial.upload_artifact(tmp_path / "b", artifact_id="fixed-id")
    assert taken.value.status_code == 409 and "artifact_id" in str(taken.value)
    finish(trial, 0.5)


def test_without_optuna_trial_study_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    trial = new_trial(None, _spec_stub())
    assert not isinstance(trial, optuna.trial.Trial)  # a plain hpo.Trial, still usable
    with pytest.raises(ModuleNotFoundError, match="pip install optuna"):
        _ = trial.study
