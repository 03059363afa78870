"""The workers page: each worker as the registry shows it (``GET /api/v1/workers``, its
``alive`` rule), plus what only the dashboard adds: the trials it holds leases on (a
fused pack: its size and members), its device's latest utilisation and memory (sent
with heartbeats), recent throughput and peak memory, and a hint when a busy worker's
device is under-used.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from hpo.protocol import WorkerInfo
from service.core.db import utcnow
from service.dashboard import queries
from service.fleet.registry import list_workers, to_info
from service.storage.models import WorkerRecord

#: A worker running trials on a device busy less than this share of the time gets a hint.
UNDERUSED_PCT = 50.0
#: The telemetry figures the page shows (the worker's latest sample).
TELEMETRY_KEYS = ("util_pct", "device_memory_mb", "cpu_pct", "host_memory_mb")


def workers(session: Session, timeout_s: float) -> list[dict[str, Any]]:
    """Each worker: registry view, current trial, pack, telemetry, throughput, hint."""
    now = utcnow()
    records = list_workers(session)
    leases = queries.leases_by_worker(session)
    recent = queries.recent_worker_metrics(session)
    current = {w.worker_id: w.current_trial_id or _first(leases.get(w.worker_id)) for w in records}
    wanted = {t for t in current.values() if t is not None}
    wanted |= {t for held in leases.values() for t in held}
    places = queries.trial_places(session, sorted(wanted))
    return [
        _worker(
            w,
            to_info(w, timeout_s, now),
            places,
            current[w.worker_id],
            leases.get(w.worker_id, []),
            recent.get(w.worker_id, []),
            now,
            timeout_s,
        )
        for w in records
    ]


def _first(ids: list[int] | None) -> int | None:
    return ids[0] if ids else None


def _place(places: dict[int, tuple[int, int, str]], trial_id: int | None) -> dict[str, Any] | None:
    place = places.get(trial_id) if trial_id is not None else None
    if place is None:
        return None
    return {"study_id": place[0], "number": place[1], "study": place[2]}


def _worker(
    record: WorkerRecord,
    info: WorkerInfo,
    places: dict[int, tuple[int, int, str]],
    current: int | None,
    held: list[int],
    recent: list[tuple[int, dict[str, Any]]],
    now: datetime,
    timeout_s: float,
) -> dict[str, Any]:
    metrics = [m for _, m in recent]
    speeds = [float(m["samples_per_s"]) for m in metrics if _num(m.get("samples_per_s"))]
    memory = [float(m["peak_memory_mb"]) for m in metrics if _num(m.get("peak_memory_mb"))]
    members = [p for p in (_place(places, t) for t in held) if p is not None]
    members.sort(key=lambda p: (p["study"], p["number"]))
    sample = telemetry(record.telemetry, now, timeout_s)
    return info.model_dump(mode="json") | {
        "trial": _place(places, current),
        "pack": {"size": len(members), "trials": members},
        "telemetry": sample,
        "gpu": is_gpu(info.devices, sample),
        "hint": hint(info, sample, len(members)),
        "recent_trials": len({t for t, _ in recent}),
        "samples_per_s": sum(speeds) / len(speeds) if speeds else None,
        "peak_memory_mb": max(memory) if memory else None,
    }


def telemetry(raw: dict[str, Any] | None, now: datetime, timeout_s: float) -> dict[str, Any] | None:
    """The worker's latest sample (numbers, ``at``) and whether it is ``fresh`` (taken
    within the worker timeout); None when it never sent one."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {k: float(raw[k]) for k in TELEMETRY_KEYS if _num(raw.get(k))}
    if not out:
        return None
    at = _moment(raw.get("at"))
    out["at"] = at.isoformat() if at else None
    out["fresh"] = at is not None and at >= now - timedelta(seconds=timeout_s)
    return out


def _moment(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def is_gpu(devices: list[str], sample: dict[str, Any] | None) -> bool:
    """A GPU worker: a device names CUDA, or its telemetry has GPU memory."""
    named = any("cuda" in d.lower() for d in devices)
    return named or bool(sample and "device_memory_mb" in sample)


def hint(info: WorkerInfo, sample: dict[str, Any] | None, running: int) -> str | None:
    """Advice for a live worker running trials on an under-used device (None otherwise:
    busy, idle, gone, or no recent telemetry)."""
    if not info.alive or not running or not sample or not sample["fresh"]:
        return None
    util = sample.get("util_pct")
    if util is None or util >= UNDERUSED_PCT:
        return None
    if is_gpu(info.devices, sample):
        if running > 1:
            return (
                f"GPU {util:.0f} % busy with a pack of {running}: "
                "a larger pack (--pack auto) would use it more"
            )
        return f"GPU {util:.0f} % busy: run more trials per device with --pack"
    return (
        f"CPU {util:.0f} % busy: train several trials in one process with --pack, "
        "or start another worker on this host"
    )


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
