"""The server's Optuna trial view (service/optuna_store.TrialView): what the sampler
sees equals what Optuna's own storage reads, also for trials written elsewhere
(another server process, a plain Optuna client), and random-sampler studies keep
no trials in memory."""

from __future__ import annotations

import optuna
import pytest

from hpo.spec import StudySpec
from service.storage.optuna_store import OptunaStore
from service.storage.trial_view import TrialView
from tests.support import TOY_SPACE, study_spec

State = optuna.trial.TrialState


def _spec(name: str, sampler: str) -> StudySpec:
    """A one-parameter study of the ``toy`` workload (no trainer settings to check)."""
    body = study_spec(
        name,
        workload="toy",
        sampler={"name": sampler, "seed": 3},
        pruner={"name": "none"},
        space=TOY_SPACE,
    )
    return StudySpec.model_validate(body)


def _summary(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [(t.number, t.state, t.values, t.params, dict(t.intermediate_values)) for t in trials]


@pytest.fixture
def store(db_url: str):
    store = OptunaStore(db_url)
    yield store
    store.dispose()


def _lease_like(store: OptunaStore, cached) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    trial_id = cached.new_trial()
    with cached.sampling(trial_id) as trial:
        x = trial.suggest_float("x", 0, 1)
        number = trial.number
    return number, x


def test_view_matches_optuna_with_writes_from_elsewhere(store: OptunaStore, db_url: str) -> None:
    spec = _spec("view", "tpe")
    store.create(spec, 3)
    study_id = store.storage.get_study_id_from_name("view")
    cached = store.get(study_id, "view", spec, 3)
    other = optuna.load_study(study_name="view", storage=db_url)  # another process's client
    for i in range(12):  # past TPE's startup trials, mixed writers
        if i % 3 == 0:
            t = other.ask()
            t.suggest_float("x", 0, 1)
            t.report(0.1, 0)
            other.tell(t, 0.2 * (i % 5))
        else:
            number, x = _lease_like(store, cached)
            assert cached.tell(number, State.COMPLETE, [x]) == (State.COMPLETE, [x])
    running_elsewhere = other.ask()
    running_elsewhere.suggest_float("x", 0, 1)
    number, _ = _lease_like(store, cached)  # TPE now samples with the view
    fresh = optuna.storages.RDBStorage(db_url).get_all_trials(study_id)
    seen = store.view.get_all_trials(study_id, deepcopy=False)
    assert _summary(seen) == _summary(fresh)
    assert {t.number for t in seen if t.state == State.RUNNING} == {
        running_elsewhere.number,
        number,
    }
    # finished elsewhere while cached as running: the next read sees it finished
    other.tell(running_elsewhere, 0.9)
    assert _summary(store.view.get_all_trials(study_id)) == _summary(
        optuna.storages.RDBStorage(db_url).get_all_trials(study_id)
    )


def test_random_sampler_keeps_no_trials(store: OptunaStore) -> None:
    spec = _spec("rand", "random")
    store.create(spec, 3)
    study_id = store.storage.get_study_id_from_name("rand")
    cached = store.get(study_id, "rand", spec, 3)
    for _ in range(20):
        number, x = _lease_like(store, cached)
        assert cached.tell(number, State.COMPLETE, [x]) == (State.COMPLETE, [x])
    view: TrialView = store.view
    assert study_id not in view._loaded
    assert view._studies[study_id].trials == {}
    assert not view._trial_id_to_study_id_and_number
    done = store.storage.get_all_trials(study_id, states=(State.COMPLETE,))
    assert len(done) == 20 and all(t.params for t in done)
