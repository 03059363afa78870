"""Helpers for the trial-protocol tests: study specs, a worker speaking the protocol
through a TestClient (or any httpx-like client), and direct database pokes."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import optuna
from sqlalchemy import select, update

from hpo.protocol import SHA256_HEADER
from service.core.db import utcnow
from service.storage.models import LeaseRecord, StudyRecord, TrialRecord
from tests.conftest import Tokens
from tests.support import study_spec

API = "/api/v1"


#: The protocol tests' space: momentum (from 0.0) only for momentum and nesterov.
PROTOCOL_SPACE: dict[str, Any] = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "nesterov", "adam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {
        "type": "float",
        "low": 0.0,
        "high": 0.99,
        "when": {"optimizer": ["momentum", "nesterov"]},
    },
}


def spec(name: str = "s1", **changes: Any) -> dict[str, Any]:
    """:func:`tests.support.study_spec` with the protocol tests' defaults: no pruner,
    two retries, short fixed settings and :data:`PROTOCOL_SPACE`."""
    defaults: dict[str, Any] = {
        "pruner": {"name": "none"},
        "budget": {"max_trials": 50, "max_retries": 2},
        "fixed": {"epochs": 3, "batch_size": 64},
        "space": PROTOCOL_SPACE,
    }
    return study_spec(name, **{**defaults, **changes})


def create_study(client: Any, tokens: Tokens, **changes: Any) -> dict[str, Any]:
    """Create a study through POST /api/v1/studies (admin)."""
    response = client.post(f"{API}/studies", json=spec(**changes), headers=_h(tokens.admin))
    assert response.status_code == 201, response.text
    return response.json()


def set_state(client: Any, tokens: Tokens, name: str, action: str) -> None:
    """pause / resume / stop through the studies API (admin)."""
    response = client.post(f"{API}/studies/{name}/{action}", headers=_h(tokens.admin))
    assert response.status_code == 200, response.text


def _h(token: str) -> dict[str, str]:
    return Tokens.header(token)


@dataclass
class Worker:
    """A registered worker speaking the protocol over ``client``."""

    client: Any
    token: str
    worker_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = _h(self.token)
        if not self.worker_id:
            response = self.client.post(
                f"{API}/workers/register",
                json={"hostname": "box", "devices": ["cuda:0"], "version": "t", "name": "box:0"},
                headers=self.headers,
            )
            assert response.status_code == 201, response.text
            self.worker_id = response.json()["worker_id"]

    def lease_raw(self, **body: Any) -> httpx.Response:
        return self.client.post(
            f"{API}/trials/lease", json={"worker_id": self.worker_id, **body}, headers=self.headers
        )

    def lease(self, **body: Any) -> dict[str, Any]:
        response = self.lease_raw(**body)
        assert response.status_code == 200, response.text
        return response.json()

    def trial(self, **body: Any) -> dict[str, Any]:
        answer = self.lease(**body)
        assert answer["trial"] is not None, answer
        return answer["trial"]

    def post(self, lease_id: str, verb: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post(
            f"{API}/leases/{lease_id}/{verb}", json=body or {}, headers=self.headers
        )

    def ok(self, lease_id: str, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.post(lease_id, verb, body)
        assert response.status_code == 200, response.text
        return response.json()


def put_artifact(worker: Worker, lease_id: str, data: bytes, **params: Any) -> httpx.Response:
    """PUT a file through the lease (query ``params``: kind, step, filename; ``sha``
    overrides the hash header, which is the data's SHA-256 otherwise)."""
    sha = params.pop("sha", hashlib.sha256(data).hexdigest())
    headers = {**worker.headers, SHA256_HEADER: str(sha)}
    query = {"filename": "ckpt.tar", **params}
    return worker.client.put(
        f"{API}/leases/{lease_id}/artifacts", content=data, params=query, headers=headers
    )


def upload_artifact(worker: Worker, lease_id: str, data: bytes, **params: Any) -> dict[str, Any]:
    """:func:`put_artifact` that must be accepted (201); the stored artifact's info."""
    answer = put_artifact(worker, lease_id, data, **params)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def artifact_listing(client: Any, tokens: Tokens, trial_id: int) -> list[dict[str, Any]]:
    """GET /api/v1/trials/{trial_id}/artifacts as a viewer."""
    answer = client.get(f"{API}/trials/{trial_id}/artifacts", headers=_h(tokens.viewer))
    assert answer.status_code == 200, answer.text
    return answer.json()


def expire_lease(ctx: Any, lease_id: str) -> None:
    """Move the clock: the lease (and its trial row) expired a minute ago."""
    past = utcnow() - timedelta(seconds=60)
    with ctx.db.session() as session:
        session.execute(
            update(LeaseRecord).where(LeaseRecord.lease_id == lease_id).values(expires_at=past)
        )
        session.execute(
            update(TrialRecord)
            .where(TrialRecord.lease_id == lease_id)
            .values(lease_expires_at=past)
        )


def expire_and_reap(ctx: Any, lease_id: str) -> int:
    """Expire the lease, then run one reaper pass; returns what the reaper cleaned up."""
    from service import trials

    expire_lease(ctx, lease_id)
    return trials.reap_all(ctx)


def optuna_trials(ctx: Any, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = ctx.store.storage
    return storage.get_all_trials(storage.get_study_id_from_name(name))


def optuna_trial(ctx: Any, trial_id: int) -> optuna.trial.FrozenTrial:
    return ctx.store.storage.get_trial(trial_id)


def trial_rows(ctx: Any, name: str) -> list[TrialRecord]:
    with ctx.db.session() as session:
        study_id = session.scalar(select(StudyRecord.study_id).where(StudyRecord.name == name))
        return list(
            session.scalars(
                select(TrialRecord).where(TrialRecord.study_id == study_id).order_by(TrialRecord.id)
            )
        )


def lease_row(ctx: Any, lease_id: str) -> LeaseRecord:
    with ctx.db.session() as session:
        row = session.get(LeaseRecord, lease_id)
        assert row is not None
        return row


@dataclass
class Tracker:
    """Client-side view: a trial counts as running from its lease answer until just
    before its complete request, so this count never exceeds the server's."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: set[int] = field(default_factory=set)
    peak: int = 0
    leased: Counter[int] = field(default_factory=Counter)
    completed: Counter[int] = field(default_factory=Counter)
    by_server: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def start(self, trial_id: int, server: str) -> None:
        with self.lock:
            if trial_id in self.live:
                self.errors.append(f"trial {trial_id} leased while live elsewhere")
            self.live.add(trial_id)
            self.leased[trial_id] += 1
            self.by_server[server] += 1
            self.peak = max(self.peak, len(self.live))

    def stop(self, trial_id: int) -> None:
        with self.lock:
            self.live.discard(trial_id)
