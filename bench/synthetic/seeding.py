"""Fill the database with synthetic studies (see :mod:`bench.synthetic.demo`).

- :func:`seed_ask_tell` walks Optuna's ask/tell API trial by trial (what a real
  run does), writing ``hpo_trials`` and ``hpo_trial_metrics`` rows as workers would;
- :func:`seed_bulk` inserts rows straight into Optuna's tables with
  ``executemany`` (10,000 trials in seconds), for scale tests and benchmarks.

Both take the generator of outcomes (``simulate``): :func:`demo.simulate` by
default, :func:`compression.simulate` for multi-objective compression studies
(every objective value, and the ``final_metrics`` user attribute). Finished
trials get the findings and telemetry the server would have stored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages._rdb import models as om
from optuna.trial import TrialState
from sqlalchemy import insert, select

from bench.synthetic.demo import METRIC, Outcome, distributions, sample_params, simulate
from hpo.spec import StudySpec, to_settings
from service.core.context import AppContext
from service.storage.models import StudyRecord, TrialMetric, TrialRecord, WorkerRecord
from service.storage.samplers import suggest_params

#: A synthetic training run: settings -> outcome (``demo.simulate``, ``compression.simulate``).
Simulate = Callable[[dict[str, Any], random.Random], Outcome]
FINAL_METRICS = "final_metrics"

# --------------------------------------------------------------------------- studies


def create_study(
    ctx: AppContext,
    spec: StudySpec,
    seed: int = 0,
    state: str = "running",
    external_name: str | None = None,
) -> int:
    """A genuine Optuna study plus its ``hpo_studies`` row; returns the study id.

    ``external_name``: create only the Optuna study, under this name, as any
    Optuna client could (names the service itself would refuse included).
    """
    if external_name is not None:
        optuna.create_study(
            storage=ctx.store.storage, study_name=external_name, direction=spec.study_directions[0]
        )
        return ctx.store.storage.get_study_id_from_name(external_name)
    ctx.store.create(spec, seed).set_user_attr("hpo_spec", spec.model_dump(mode="json"))
    study_id = ctx.store.storage.get_study_id_from_name(spec.name)
    now = datetime.now(UTC)
    with ctx.db.session() as session:
        session.add(
            StudyRecord(
                study_id=study_id,
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                state=state,
                seed=seed,
                lease_seq=0,
                created_at=now,
                updated_at=now,
            )
        )
    return study_id


def register_workers(ctx: AppContext, count: int, prefix: str = "gpu-box") -> list[str]:
    """Fake registered workers (one per GPU) so trials have someone who ran them."""
    now = datetime.now(UTC)
    ids = [f"{prefix}-{i // 2}:cuda{i % 2}" for i in range(count)]
    with ctx.db.session() as session:
        existing = set(session.scalars(select(WorkerRecord.worker_id)))
        for worker_id in ids:
            if worker_id not in existing:
                session.add(
                    WorkerRecord(
                        worker_id=worker_id,
                        hostname=worker_id.split(":")[0],
                        name=worker_id,
                        devices=[f"cuda:{worker_id[-1]} (NVIDIA H100 80GB)"],
                        version="0.1.0",
                        registered_at=now,
                        last_seen_at=now,
                    )
                )
    return ids


def register_cpu_worker(ctx: AppContext, name: str = "cpu-box:cpu") -> str:
    """A fake registered worker training on the CPU."""
    now = datetime.now(UTC)
    with ctx.db.session() as session:
        if session.get(WorkerRecord, name) is None:
            session.add(
                WorkerRecord(
                    worker_id=name,
                    hostname=name.split(":")[0],
                    name=name,
                    devices=["cpu"],
                    version="0.1.0",
                    registered_at=now,
                    last_seen_at=now,
                )
            )
    return name


def set_telemetry(
    ctx: AppContext, worker_id: str, sample: dict[str, float] | None, age_s: float = 0.0
) -> None:
    """The worker's latest device sample, as a heartbeat stores it (``at``: ``age_s`` ago)."""
    at = datetime.now(UTC) - timedelta(seconds=age_s)
    with ctx.db.session() as session:
        worker = session.get(WorkerRecord, worker_id)
        worker.telemetry = None if sample is None else {**sample, "at": at.isoformat()}
        worker.last_seen_at = datetime.now(UTC)


def hold_leases(
    ctx: AppContext, study_id: int, worker_id: str, numbers: list[int] | None = None
) -> list[int]:
    """The study's leased trials (those numbered ``numbers``, or all) are held by
    ``worker_id`` (several: as a fused pack would be); returns their numbers."""
    with ctx.db.session() as session:
        stmt = select(TrialRecord).where(
            TrialRecord.study_id == study_id, TrialRecord.state == "leased"
        )
        if numbers is not None:
            stmt = stmt.where(TrialRecord.number.in_(numbers))
        rows = session.scalars(stmt).all()
        for row in rows:
            row.worker_id = worker_id
        return sorted(row.number for row in rows if row.number is not None)


def seed_ask_tell(
    ctx: AppContext,
    spec: StudySpec,
    n_trials: int,
    *,
    seed: int = 0,
    workers: list[str] | None = None,
    running: int = 0,
    external_name: str | None = None,
    simulate: Simulate = simulate,
) -> int:
    """Create a study and run ``n_trials`` synthetic trials through ask/tell.

    The last ``running`` trials are left RUNNING (leased, half their epochs
    reported), as if workers were still training them.
    """
    study_id = create_study(ctx, spec, seed, external_name=external_name)
    study = optuna.load_study(
        study_name=external_name or spec.name,
        storage=ctx.store.storage,
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    rng = random.Random(seed)
    for i in range(n_trials):
        trial = study.ask()
        settings = spec.fixed | to_settings(spec, suggest_params(trial, spec))
        outcome = simulate(settings, rng)
        is_running = i >= n_trials - running
        if is_running:
            outcome = Outcome(TrialState.RUNNING, None, outcome.curve[: len(outcome.curve) // 2])
        single = len(spec.study_directions) == 1  # Optuna reports single-objective only
        for row in outcome.curve:
            if single and row[METRIC] is not None and outcome.state != TrialState.FAIL:
                trial.report(row[METRIC], row["epoch"])
        if outcome.final_metrics and not is_running:
            trial.set_user_attr(FINAL_METRICS, outcome.final_metrics)
        if not is_running:
            study.tell(trial, _told(outcome), state=outcome.state)
        if external_name is not None:
            continue  # a plain Optuna client writes none of the service's rows
        worker = workers[i % len(workers)] if workers else None
        _write_service_rows(
            ctx, study_id, trial._trial_id, trial.number, trial.params, outcome, worker
        )
    return study_id


def _told(outcome: Outcome) -> Any:
    """What ``study.tell`` gets: the value(s) of a complete trial, else None."""
    if outcome.state != TrialState.COMPLETE:
        return None
    return outcome.values if outcome.values is not None else outcome.value


def _write_service_rows(
    ctx: AppContext,
    study_id: int,
    trial_id: int,
    number: int,
    params: dict[str, Any],
    outcome: Outcome,
    worker: str | None,
) -> None:
    now = datetime.now(UTC)
    finished = outcome.state != TrialState.RUNNING
    with ctx.db.session() as session:
        session.add(
            TrialRecord(
                study_id=study_id,
                optuna_trial_id=trial_id,
                number=number,
                state="finished" if finished else "leased",
                params=params,
                attempts=1,
                worker_id=worker,
                final_state=outcome.state.name.lower() if finished else None,
                value=outcome.value,
                fail_reason=outcome.fail_reason,
                diagnosis=outcome.diagnosis,
                findings=outcome.findings if finished else None,
                telemetry=outcome.telemetry if finished else None,
                last_step=outcome.curve[-1]["epoch"] if outcome.curve else None,
                created_at=now,
                updated_at=now,
                finished_at=now if finished else None,
            )
        )
        for row in outcome.curve:
            session.add(
                TrialMetric(
                    study_id=study_id,
                    optuna_trial_id=trial_id,
                    attempt=1,
                    step=row["epoch"],
                    value=row[METRIC],
                    metrics=row,
                    created_at=now,
                )
            )


def seed_bulk(
    ctx: AppContext,
    spec: StudySpec,
    n_trials: int,
    *,
    seed: int = 0,
    workers: list[str] | None = None,
    batch: int = 2_000,
    simulate: Simulate = simulate,
) -> int:
    """Create a study and insert ``n_trials`` finished synthetic trials in bulk."""
    study_id = create_study(ctx, spec, seed)
    rng = random.Random(seed)
    dists = distributions(spec)
    dist_json = {name: distribution_to_json(d) for name, d in dists.items()}
    start = datetime(2026, 1, 1)
    for first in range(0, n_trials, batch):
        numbers = range(first, min(n_trials, first + batch))
        trials = []
        for number in numbers:
            params = sample_params(spec, rng)
            outcome = simulate(spec.fixed | to_settings(spec, params), rng)
            began = start + timedelta(seconds=30 * number)
            trials.append((number, params, outcome, began))
        _insert_batch(ctx, study_id, trials, dists, dist_json, workers)
    return study_id


def _insert_batch(
    ctx: AppContext,
    study_id: int,
    trials: list[tuple[int, dict[str, Any], Outcome, datetime]],
    dists: dict[str, BaseDistribution],
    dist_json: dict[str, str],
    workers: list[str] | None,
) -> None:
    t = om.TrialModel.__table__
    rows = [
        {
            "number": n,
            "study_id": study_id,
            "state": o.state,
            "datetime_start": began,
            "datetime_complete": began + timedelta(seconds=5 * len(o.curve)),
        }
        for n, _, o, began in trials
    ]
    with ctx.store.storage.engine.begin() as conn:
        result = conn.execute(insert(t).returning(t.c.trial_id, sort_by_parameter_order=True), rows)
        ids = [row[0] for row in result]
        params, values, inter = _optuna_child_rows(ids, trials, dists, dist_json)
        conn.execute(insert(om.TrialParamModel.__table__), params)
        if values:
            conn.execute(insert(om.TrialValueModel.__table__), values)
        if inter:
            conn.execute(insert(om.TrialIntermediateValueModel.__table__), inter)
        attrs = [
            {"trial_id": i, "key": FINAL_METRICS, "value_json": json.dumps(o.final_metrics)}
            for i, (_, _, o, _) in zip(ids, trials, strict=True)
            if o.final_metrics
        ]
        if attrs:
            conn.execute(insert(om.TrialUserAttributeModel.__table__), attrs)
    _insert_service_batch(ctx, study_id, ids, trials, workers)


def _optuna_child_rows(
    ids: list[int],
    trials: list[tuple[int, dict[str, Any], Outcome, datetime]],
    dists: dict[str, BaseDistribution],
    dist_json: dict[str, str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    finite = om.TrialValueModel.TrialValueType.FINITE
    inter_finite = om.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    params, values, inter = [], [], []
    for trial_id, (_, p, outcome, _) in zip(ids, trials, strict=True):
        for name, value in p.items():
            params.append(
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "distribution_json": dist_json[name],
                    "param_value": dists[name].to_internal_repr(value),
                }
            )
        if outcome.state in (TrialState.COMPLETE, TrialState.PRUNED):
            told = outcome.values if outcome.values is not None else [outcome.value]
            values += [
                {"trial_id": trial_id, "objective": k, "value": v, "value_type": finite}
                for k, v in enumerate(told)
            ]
        if outcome.state != TrialState.FAIL and outcome.values is None:
            inter += [
                {
                    "trial_id": trial_id,
                    "step": r["epoch"],
                    "intermediate_value": r[METRIC],
                    "intermediate_value_type": inter_finite,
                }
                for r in outcome.curve
            ]
    return params, values, inter


def _insert_service_batch(
    ctx: AppContext,
    study_id: int,
    ids: list[int],
    trials: list[tuple[int, dict[str, Any], Outcome, datetime]],
    workers: list[str] | None,
) -> None:
    records, metrics = [], []
    for trial_id, (number, params, o, began) in zip(ids, trials, strict=True):
        ended = began + timedelta(seconds=5 * len(o.curve))
        records.append(
            {
                "study_id": study_id,
                "optuna_trial_id": trial_id,
                "number": number,
                "state": "finished",
                "params": params,
                "attempts": 1,
                "worker_id": workers[number % len(workers)] if workers else None,
                "final_state": o.state.name.lower(),
                "value": o.value,
                "fail_reason": o.fail_reason,
                "diagnosis": o.diagnosis,
                "findings": o.findings,
                "telemetry": o.telemetry,
                "last_step": o.curve[-1]["epoch"] if o.curve else None,
                "created_at": began.replace(tzinfo=UTC),
                "updated_at": ended.replace(tzinfo=UTC),
                "finished_at": ended.replace(tzinfo=UTC),
            }
        )
        metrics += [
            {
                "study_id": study_id,
                "optuna_trial_id": trial_id,
                "attempt": 1,
                "step": r["epoch"],
                "value": r[METRIC],
                "metrics": r,
                "created_at": ended.replace(tzinfo=UTC),
            }
            for r in o.curve
        ]
    with ctx.db.session() as session:
        session.execute(insert(TrialRecord), records)
        if metrics:
            session.execute(insert(TrialMetric), metrics)
