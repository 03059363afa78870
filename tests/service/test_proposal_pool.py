"""The proposal pool (issue 23): proposals drawn ahead, taken by leases, never twice.

In-process app on SQLite (and PostgreSQL where marked); the refill passes are
called directly (the background loop sleeps for an hour here), so every step
is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from service import trials
from service.app import create_app
from service.storage.pool_models import ProposalRecord
from service.trials.pool import ProposalState
from service.trials.refill import RefillState, refill_pass, sweep
from tests.conftest import Tokens, make_settings, mint_tokens
from tests.service.lease_helpers import Worker, create_study, optuna_trial, trial_rows

RUNNING = optuna.trial.TrialState.RUNNING
POOL = {"proposal_pool": 3, "pool_refill_interval_s": 3600.0}


def pooled_app(db_url: str, tmp_path: Path, **overrides: Any) -> Any:
    return create_app(make_settings(db_url, tmp_path, **{**POOL, **overrides}))


@pytest.fixture
def pooled(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """SQLite, unless the test asks for ``db_url`` (both databases)."""
    from fastapi.testclient import TestClient

    if "db_url" in request.fixturenames:
        url = request.getfixturevalue("db_url")
    else:
        url = f"sqlite:///{tmp_path / 'hpo.db'}"
    app = pooled_app(url, tmp_path, proposal_stale_tells=1)
    with TestClient(app) as client:
        yield client, app.state.ctx, mint_tokens(app.state.ctx)
    app.state.ctx.close()


def proposals(ctx: Any) -> list[ProposalRecord]:
    with ctx.db.session() as session:
        return list(session.scalars(select(ProposalRecord).order_by(ProposalRecord.id)))


def fill(ctx: Any) -> int:
    return refill_pass(ctx, RefillState())


def test_lease_takes_the_oldest_proposal_and_the_reaper_keeps_the_rest(pooled, db_url) -> None:
    client, ctx, tokens = pooled
    create_study(client, tokens, name="p")
    assert fill(ctx) == 3
    drawn = proposals(ctx)
    assert [p.state for p in drawn] == [ProposalState.READY] * 3
    assert all(optuna_trial(ctx, p.optuna_trial_id).state == RUNNING for p in drawn)
    assert trial_rows(ctx, "p") == []  # drawn ahead: no trial row until a lease takes one
    trial = Worker(client, tokens.worker).trial()
    assert (trial["trial_id"], trial["params"]) == (drawn[0].optuna_trial_id, drawn[0].params)
    assert [p.id for p in proposals(ctx)] == [drawn[1].id, drawn[2].id]
    metrics = client.get("/metrics").text
    assert 'hpo_proposal_pool_depth{state="ready",study="p"} 2.0' in metrics
    assert "hpo_proposal_age_seconds_count 1.0" in metrics
    assert "hpo_proposal_sample_seconds_count 3.0" in metrics
    ctx.settings.orphan_grace_s = 1e-6  # the reaper would fail RUNNING trials without a row
    trials.reap_all(ctx)
    assert all(optuna_trial(ctx, p.optuna_trial_id).state == RUNNING for p in drawn[1:])


def test_a_stale_proposal_is_redrawn_never_handed_out(pooled) -> None:
    client, ctx, tokens = pooled  # proposal_stale_tells=1
    create_study(client, tokens, name="p")
    fill(ctx)
    first, second, third = proposals(ctx)
    worker = Worker(client, tokens.worker)
    handed = []
    for _ in range(2):  # two tells: the third proposal, drawn at 0 tells, goes stale
        trial = worker.trial()
        handed.append(trial["trial_id"])
        worker.ok(trial["lease_id"], "complete", {"value": 0.5})
    assert handed == [first.optuna_trial_id, second.optuna_trial_id]
    trial = worker.trial()  # sampled on the request path: the pool holds only a stale one
    assert trial["trial_id"] != third.optuna_trial_id
    assert [p.state for p in proposals(ctx)] == [ProposalState.STALE]
    assert sweep(ctx) == 1
    failed = optuna_trial(ctx, third.optuna_trial_id)
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "stale proposal" in failed.user_attrs["fail_reason"]
    fill(ctx)
    assert {p.drawn_tells for p in proposals(ctx)} == {2}


def test_the_pool_never_draws_past_the_budget(pooled) -> None:
    client, ctx, tokens = pooled
    create_study(client, tokens, name="p", budget={"max_trials": 2})
    assert fill(ctx) == 2
    assert fill(ctx) == 0
    worker = Worker(client, tokens.worker)
    for _ in range(2):
        worker.trial()
    answer = worker.lease()
    assert answer["trial"] is None and "budget used" in answer["reason"]
    storage = ctx.store.storage
    assert len(storage.get_all_trials(storage.get_study_id_from_name("p"))) == 2


def test_grid_define_by_run_and_enqueued_trials_are_not_pooled(pooled) -> None:
    client, ctx, tokens = pooled
    grid = {"optimizer": {"type": "categorical", "choices": ["sgd", "adam"]}}
    create_study(client, tokens, name="g", sampler={"name": "grid"}, space=grid)
    create_study(client, tokens, name="d", space={}, workload="toy")
    create_study(client, tokens, name="e")
    fill(ctx)
    assert {p.study_id for p in proposals(ctx)} == {_study_id(ctx, "e")}
    fixed = {"optimizer": "adam", "lr": 0.01}
    answer = client.post(
        "/api/v1/studies/e/enqueue", json={"params": fixed}, headers=Tokens.header(tokens.admin)
    )
    assert answer.status_code in (200, 201), answer.text
    trial = Worker(client, tokens.worker).trial(studies=["e"])
    assert trial["params"] == fixed  # the enqueued trial first, not a proposal
    assert len(proposals(ctx)) == 3


def test_stopping_a_study_discards_its_proposals(pooled) -> None:
    client, ctx, tokens = pooled
    create_study(client, tokens, name="p")
    fill(ctx)
    drawn = proposals(ctx)
    answer = client.post("/api/v1/studies/p/stop", headers=Tokens.header(tokens.admin))
    assert answer.status_code == 200, answer.text
    assert sweep(ctx) == 3
    assert proposals(ctx) == []
    assert {optuna_trial(ctx, p.optuna_trial_id).state for p in drawn} == {
        optuna.trial.TrialState.FAIL
    }


def test_a_restart_keeps_the_pool_and_hands_nothing_out_twice(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    first = pooled_app(url, tmp_path)
    with TestClient(first) as client:
        tokens = mint_tokens(first.state.ctx)
        create_study(client, tokens, name="p")
        fill(first.state.ctx)
        drawn = proposals(first.state.ctx)
        taken = Worker(client, tokens.worker).trial()["trial_id"]
    first.state.ctx.close()
    second = pooled_app(url, tmp_path)  # a new process's app on the same database
    with TestClient(second) as client:
        worker = Worker(client, tokens.worker)
        after = [worker.trial()["trial_id"] for _ in range(2)]
    second.state.ctx.close()
    assert [taken, *after] == [p.optuna_trial_id for p in drawn]


def _study_id(ctx: Any, name: str) -> int:
    return int(ctx.store.storage.get_study_id_from_name(name))
