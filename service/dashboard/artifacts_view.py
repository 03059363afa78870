"""What the dashboard shows of artifacts: a trial's list (checkpoints with their step,
the model, other files) with download links, and the bytes a study's artifacts hold.

Both come from the API's read side (:mod:`service.artifacts`): the list is
``GET /api/v1/trials/{id}/artifacts`` (plain-Optuna uploads included), the bytes
are ``GET /api/v1/studies/{study}/artifacts``; the links are
``GET /api/v1/artifacts/{id}``, which the dashboard's sign-in cookie opens.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from hpo.protocol import API_PREFIX, ArtifactInfo, ArtifactKind
from service.artifacts import records, retention
from service.core.context import AppContext
from service.core.errors import ArtifactNotFound
from service.storage.models import StudyRecord

DOWNLOAD = f"{API_PREFIX}/artifacts/"
STUDY_ARTIFACTS = API_PREFIX + "/studies/{study_id}/artifacts"
#: The order of the trial page's list: checkpoints (by step), the model, other files.
KIND_ORDER = {ArtifactKind.CHECKPOINT: 0, ArtifactKind.MODEL: 1, ArtifactKind.FILE: 2}


def size_text(size: int | None) -> str:
    """``1234567`` -> ``1.2 MB``; below 1 kB in bytes; ``—`` when unknown (plain Optuna)."""
    if size is None:
        return "—"
    if size < 1000:
        return f"{size} byte{'s' * (size != 1)}"
    value, units = size / 1000, ["kB", "MB", "GB", "TB", "PB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.1f} {units[0]}"


def exact(size: int | None) -> str:
    """``1,234,567 bytes`` (``size unknown`` for None)."""
    return "size unknown" if size is None else f"{size:,} byte{'s' * (size != 1)}"


def trial_artifacts(ctx: AppContext, trial_id: int) -> list[dict[str, Any]]:
    """A trial's artifacts as the trial page lists them (raw strings: the template escapes)."""
    try:
        found = records.trial_artifacts(ctx, trial_id)
    except ArtifactNotFound:
        return []
    found.sort(key=lambda a: (KIND_ORDER.get(a.kind, 3), a.step or 0))
    return [row(a) for a in found]


def row(a: ArtifactInfo) -> dict[str, Any]:
    return {
        "artifact_id": a.artifact_id,
        "kind": str(a.kind),
        "filename": a.filename,
        "step": a.step,
        "size": a.size,
        "size_text": size_text(a.size),
        "size_exact": exact(a.size),
        "created_at": a.created_at,
        "source": a.source,
        "url": DOWNLOAD + quote(a.artifact_id, safe=""),
    }


def total(rows: list[dict[str, Any]]) -> int:
    """Bytes of the listed artifacts whose size is known."""
    return sum(r["size"] or 0 for r in rows)


def study_bytes(session: Session, study_id: int) -> dict[str, Any] | None:
    """The study page's figure: bytes held (``total``, per kind, ``count``) and the API
    URL the page refreshes it from; None for a study created outside the service."""
    if session.get(StudyRecord, study_id) is None:
        return None
    held = retention.bytes_held(session, study_id)
    kinds = {k: v for k, v in held.items() if k not in ("total", "count")}
    return {
        "total": held["total"],
        "count": held["count"],
        "text": size_text(held["total"]),
        "exact": f"{exact(held['total'])} in {held['count']} file{'s' * (held['count'] != 1)}",
        "kinds": ", ".join(f"{k} {size_text(v)}" for k, v in sorted(kinds.items())),
        "url": STUDY_ARTIFACTS.format(study_id=study_id),
    }
