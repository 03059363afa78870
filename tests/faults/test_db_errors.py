"""Item 3, in process: the database connection drops inside an Optuna call.

The live restart test (``test_db_restart.py``) mostly sees the outage at the
first query of a request (authentication). These cases drop the connection
*inside* Optuna's storage, after our own transaction succeeded: the answer is
still 503 naming the database (workers retry 503), never 500, and the retried
complete lands exactly once.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from service.trials import finishing
from tests.service.lease_helpers import Worker, create_study, optuna_trials

pytestmark = pytest.mark.faults


def _dropped() -> optuna.exceptions.StorageInternalError:
    """What Optuna's RDBStorage raises when PostgreSQL goes away mid-commit."""
    cause = OperationalError(
        "UPDATE trials ...", {}, Exception("server closed the connection unexpectedly")
    )
    cause.connection_invalidated = True
    err = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    err.__cause__ = cause
    return err


def _once(real: Any) -> Any:
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _dropped()
        return real(*args, **kwargs)

    return flaky


def test_complete_when_optuna_loses_the_database_is_503_then_lands_once(
    client, tokens, ctx, monkeypatch, figures
) -> None:
    create_study(client, tokens, name="drop")
    worker = Worker(client, tokens.worker)
    trial = worker.trial()
    lid = trial["lease_id"]
    monkeypatch.setattr(finishing, "_tell", _once(finishing._tell))
    first = worker.post(lid, "complete", {"value": 0.5})
    assert first.status_code == 503, first.text
    assert "database" in first.json()["detail"]
    assert first.headers.get("retry-after")
    again = worker.ok(lid, "complete", {"value": 0.5})  # the worker's retry
    assert again["state"] == "complete" and again["value"] == 0.5
    assert worker.ok(lid, "complete", {"value": 0.5}) == again
    done = [t for t in optuna_trials(ctx, "drop") if t.state.name == "COMPLETE"]
    assert [t.value for t in done] == [0.5]
    figures.setdefault("DB drop inside Optuna", "complete: 503 then landed once")


def test_report_when_optuna_loses_the_database_is_503(client, tokens, ctx, monkeypatch) -> None:
    create_study(client, tokens, name="drop2")
    worker = Worker(client, tokens.worker)
    lid = worker.trial()["lease_id"]
    storage = ctx.store.storage
    monkeypatch.setattr(
        storage, "set_trial_intermediate_value", _once(storage.set_trial_intermediate_value)
    )
    first = worker.post(lid, "report", {"step": 1, "value": 0.3})
    assert first.status_code == 503, first.text
    assert "database" in first.json()["detail"]
    assert worker.ok(lid, "report", {"step": 1, "value": 0.3})["action"] == "continue"


def test_non_connection_storage_error_is_not_disguised_as_503(
    client, tokens, ctx, monkeypatch
) -> None:
    create_study(client, tokens, name="drop3")
    worker = Worker(client, tokens.worker)
    lid = worker.trial()["lease_id"]

    def broken(*_a: Any, **_k: Any) -> None:
        raise optuna.exceptions.StorageInternalError("value too long for column")

    monkeypatch.setattr(ctx.store.storage, "set_trial_intermediate_value", broken)
    answer = worker.post(lid, "report", {"step": 1, "value": 0.3})
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal server error", "field": None}
