"""Summaries for the studies page, the study header and the workers page (SQL aggregates)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from service.dashboard import queries
from service.dashboard.frame import distribution, meta_from_row
from service.storage.models import TrialRecord

STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def studies(session: Session, study_id: int | None = None) -> list[dict[str, Any]]:
    """Every study (or one): state, sampler, trials per state, best value + settings, workers."""
    rows = queries.list_studies(session, study_id)
    counts = queries.state_counts(session, study_id)
    best_ids = queries.best_trial_ids(session, {r.study_id: r.directions[0] for r in rows})
    best_params: dict[int, dict[str, Any]] = {}
    for tid, name, value, djson in queries.params_of(session, list(best_ids.values())):
        best_params.setdefault(tid, {})[name] = distribution(djson).to_external_repr(value)
    best_values = queries.values_of(session, list(best_ids.values()))
    numbers = queries.trial_numbers(session, list(best_ids.values()))
    workers = queries.active_workers(session)
    out = []
    for row in rows:
        meta = meta_from_row(row)
        best_id = best_ids.get(row.study_id)
        settings = meta.fixed | {
            meta.setting_of(k): v for k, v in best_params.get(best_id or -1, {}).items()
        }
        by_state = counts.get(row.study_id, {})
        out.append({
            "study_id": row.study_id, "name": row.name, "run_state": row.run_state or "external",
            "direction": meta.direction, "objective": meta.objective_name,
            "sampler": meta.sampler, "pruner": meta.pruner,
            "counts": {s: by_state.get(s, 0) for s in STATE_ORDER},
            "total": sum(by_state.values()),
            "best": None if best_id is None else {
                "number": numbers[best_id][1], "value": _finite(best_values.get(best_id)),
                "settings": settings,
            },
            "workers": workers.get(row.study_id, []),
        })  # fmt: skip
    return out


def _alive(last_seen: datetime, timeout_s: float, now: datetime) -> bool:
    if last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=UTC)
    return (now - last_seen).total_seconds() <= timeout_s


def workers(session: Session, timeout_s: float) -> list[dict[str, Any]]:
    """Each worker: devices, current trial, last heartbeat, recent throughput and memory."""
    now = datetime.now(UTC)
    records = queries.workers(session)
    leased = queries.leased_trials(session)
    recent = queries.recent_worker_metrics(session)
    current = {w.worker_id: w.current_trial_id or leased.get(w.worker_id) for w in records}
    places = queries.trial_numbers(session, [t for t in current.values() if t is not None])
    names = {r.study_id: r.name for r in queries.list_studies(session)}
    out = []
    for w in records:
        metrics = [m for _, m in recent.get(w.worker_id, [])]
        speeds = [float(m["samples_per_s"]) for m in metrics if _num(m.get("samples_per_s"))]
        memory = [float(m["peak_memory_mb"]) for m in metrics if _num(m.get("peak_memory_mb"))]
        trial = places.get(current[w.worker_id] or -1)
        out.append({
            "worker_id": w.worker_id, "name": w.name or w.worker_id, "hostname": w.hostname,
            "devices": list(w.devices or []), "version": w.version,
            "last_seen": w.last_seen_at.isoformat(),
            "alive": _alive(w.last_seen_at, timeout_s, now),
            "trial": None if trial is None else {
                "study_id": trial[0], "study": names.get(trial[0], "?"), "number": trial[1],
            },
            "recent_trials": len({t for t, _ in recent.get(w.worker_id, [])}),
            "samples_per_s": sum(speeds) / len(speeds) if speeds else None,
            "peak_memory_mb": max(memory) if memory else None,
        })  # fmt: skip
    return out


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def diagnosis(state: str, record: TrialRecord | None, epochs: int | None) -> str | None:
    """What happened to a trial, in a few words (diverged, pruned at epoch N, ...)."""
    if record is not None and record.diagnosis:
        return record.diagnosis
    if state == "PRUNED":
        return f"pruned at epoch {epochs}" if epochs else "pruned"
    if record is not None and record.fail_reason:
        return record.fail_reason
    return None
