"""Gauges of the service's state, read from the database at each scrape of ``/metrics``.

* ``hpo_trials_waiting{study}``: trials a worker could lease now (queued re-runs,
  plus new trials the budget and ``max_concurrent`` allow) - the queue depth an
  autoscaler scales workers on;
* ``hpo_trials_running{study}``: trials being sampled or held by a worker;
* ``hpo_workers_live{workload}``: workers seen within ``worker_timeout_s``;
* ``hpo_worker_utilization_percent{worker}``, ``hpo_worker_device_memory_mb{worker}``:
  each live worker's latest device sample (sent with its heartbeats).

Computed from the database, so every server process (and replica) reports the
same values; only running studies are listed.
"""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hpo.schemas import StudyState
from service.core.db import utcnow
from service.fleet.registry import capabilities
from service.storage.models import StudyRecord, TrialRecord, WorkerRecord
from service.studies.specs import stored_spec
from service.trials.states import ACTIVE_TRIAL_STATES, TrialState


def state_families(session: Session, worker_timeout_s: float) -> list[Metric]:
    """The three gauge families for one scrape."""
    waiting = GaugeMetricFamily(
        "hpo_trials_waiting", "Trials a worker could lease now, per study", labels=["study"]
    )
    running = GaugeMetricFamily(
        "hpo_trials_running", "Trials being sampled or run by a worker", labels=["study"]
    )
    for name, wait, run in _per_study(session):
        waiting.add_metric([name], wait)
        running.add_metric([name], run)
    workers = _live_workers(session, worker_timeout_s)
    live = GaugeMetricFamily(
        "hpo_workers_live", "Workers seen within worker_timeout_s", labels=["workload"]
    )
    for workload, count in sorted(_by_workload(workers).items()):
        live.add_metric([workload], count)
    return [waiting, running, live, *_utilisation(workers)]


def _utilisation(workers: list[WorkerRecord]) -> list[Metric]:
    """Per live worker: its device's latest utilisation and memory (sent with heartbeats)."""
    util = GaugeMetricFamily(
        "hpo_worker_utilization_percent",
        "Device utilisation of a worker while it trains (GPU: NVML; CPU: its processes)",
        labels=["worker"],
    )
    memory = GaugeMetricFamily(
        "hpo_worker_device_memory_mb", "GPU memory in use on a worker's device", labels=["worker"]
    )
    for worker in workers:
        sample, name = worker.telemetry or {}, worker.name or worker.worker_id
        if isinstance(sample.get("util_pct"), int | float):
            util.add_metric([name], float(sample["util_pct"]))
        if isinstance(sample.get("device_memory_mb"), int | float):
            memory.add_metric([name], float(sample["device_memory_mb"]))
    return [util, memory]


def _per_study(session: Session) -> list[tuple[str, int, int]]:
    counts: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(TrialRecord.study_id, TrialRecord.state, func.count()).group_by(
            TrialRecord.study_id, TrialRecord.state
        )
    )
    for study_id, state, n in rows:
        counts.setdefault(study_id, {})[state] = int(n)
    out = []
    studies = session.scalars(select(StudyRecord).where(StudyRecord.state == StudyState.RUNNING))
    for study in studies:
        by_state = counts.get(study.study_id, {})
        budget = stored_spec(study.spec).budget
        active = sum(by_state.get(s, 0) for s in ACTIVE_TRIAL_STATES)
        queued = by_state.get(TrialState.QUEUED, 0)
        new = max(0, budget.max_trials - sum(by_state.values()))
        if budget.max_concurrent is not None:
            new = min(new, max(0, budget.max_concurrent - active - queued))
        out.append((study.name, queued + new, active))
    return out


def _live_workers(session: Session, timeout_s: float) -> list[WorkerRecord]:
    since = utcnow() - timedelta(seconds=timeout_s)
    return list(session.scalars(select(WorkerRecord).where(WorkerRecord.last_seen_at >= since)))


def _by_workload(workers: list[WorkerRecord]) -> dict[str, int]:
    live: dict[str, int] = {}
    for worker in workers:
        for workload in capabilities(worker)[0]:
            live[workload] = live.get(workload, 0) + 1
    return live
