"""Per-process Optuna state. Seeded samplers draw per trial, so a restarted server or
a second server process (with its own copy of the sampler) goes on with new proposals
instead of repeating the first ones (service/spec.seed_sampler_for_trial, called by
CachedStudy.sampling); Optuna's engine gets the configured pool."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpo.spec import StudySpec
from service.storage.optuna_store import OptunaStore
from service.storage.samplers import make_sampler, seed_sampler_for_trial
from tests.support import TOY_SPACE, study_spec

SEED = 11


def _spec(sampler: str) -> StudySpec:
    """A one-parameter study of the ``toy`` workload (no trainer settings to check)."""
    body = study_spec(
        "seeded",
        workload="toy",
        sampler={"name": sampler, "seed": SEED},
        pruner={"name": "none"},
        space=TOY_SPACE,
    )
    return StudySpec.model_validate(body)


def _server(url: str, spec: StudySpec, create: bool = False) -> tuple[OptunaStore, object]:
    """What one server process holds: a store and its cached, seeded study."""
    store = OptunaStore(url)
    if create:
        store.create(spec, SEED)
    study_id = store.storage.get_study_id_from_name(spec.name)
    return store, store.get(study_id, spec.name, spec, SEED)


def _sample(cached, value: float = 0.5) -> float:  # type: ignore[no-untyped-def]
    """Lease-like: a new trial, sampled under the lock, then told."""
    trial_id = cached.new_trial()
    with cached.sampling(trial_id) as trial:
        x = trial.suggest_float("x", 0, 1)
        number = trial.number
    cached.tell(number, optuna.trial.TrialState.COMPLETE, [value])
    return x


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_two_server_processes_do_not_repeat_each_other(db_url: str, sampler: str) -> None:
    spec = _spec(sampler)
    store_a, a = _server(db_url, spec, create=True)
    store_b, b = _server(db_url, spec)  # a second process: same seed, fresh sampler state
    try:
        xs = [_sample(a), _sample(b), _sample(a), _sample(b)]
    finally:
        store_a.dispose()
        store_b.dispose()
    assert len(set(xs)) == len(xs), xs


def test_a_restarted_server_goes_on_as_if_it_never_stopped(tmp_path: Path) -> None:
    spec = _spec("random")
    one_store, one = _server(f"sqlite:///{tmp_path / 'one.db'}", spec, create=True)
    straight = [_sample(one) for _ in range(4)]
    one_store.dispose()

    url = f"sqlite:///{tmp_path / 'two.db'}"
    before_store, before = _server(url, spec, create=True)
    restarted = [_sample(before), _sample(before)]
    before_store.dispose()
    after_store, after = _server(url, spec)  # the restart: a new process, same database
    restarted += [_sample(after), _sample(after)]
    after_store.dispose()
    assert restarted == straight


def test_seeding_reaches_the_samplers_a_sampler_wraps() -> None:
    spec = _spec("tpe")
    first, second = make_sampler(spec, SEED), make_sampler(spec, SEED)
    seed_sampler_for_trial(first, 123)
    seed_sampler_for_trial(second, 123)
    draws = [s._random_sampler._rng.rng.random_sample() for s in (first, second)]  # type: ignore[attr-defined]
    assert draws[0] == draws[1]
    seed_sampler_for_trial(second, 124)
    assert second._random_sampler._rng.rng.random_sample() != draws[0]  # type: ignore[attr-defined]


def test_optunas_engine_gets_the_configured_pool(pg_url: str) -> None:
    """HPO_DB_POOL_SIZE / HPO_DB_MAX_OVERFLOW bound Optuna's engine too (several server
    processes on one PostgreSQL must fit in its max_connections)."""
    store = OptunaStore(pg_url, pool_size=2, max_overflow=1)
    try:
        pool = store.storage.engine.pool
        assert (pool.size(), pool._max_overflow) == (2, 1)  # type: ignore[attr-defined]
    finally:
        store.dispose()
