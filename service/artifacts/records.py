"""``hpo_artifacts`` rows and Optuna's ``artifacts:<id>`` metadata, read as one list."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.optuna_view import ARTIFACT_PREFIX
from hpo.protocol import ArtifactInfo, ArtifactKind, Checkpoint
from service.core.context import AppContext
from service.core.errors import ArtifactNotFound
from service.storage import optuna_rows
from service.storage.models import ArtifactRecord, StudyRecord, TrialRecord

COMMITTED, BAD, DELETED = "committed", "bad", "deleted"


def optuna_meta(record: ArtifactRecord) -> str:
    """The JSON Optuna stores under ``artifacts:<id>`` (ArtifactMeta's fields)."""
    return json.dumps(
        {
            "artifact_id": record.artifact_id,
            "filename": record.filename,
            "mimetype": record.mimetype,
            "encoding": None,
        }
    )


def latest_checkpoint_without_commit(session: Session, optuna_trial_id: int) -> Checkpoint | None:
    """The trial's newest committed checkpoint (None: there is none)."""
    row = session.scalars(
        select(ArtifactRecord)
        .where(
            ArtifactRecord.optuna_trial_id == optuna_trial_id,
            ArtifactRecord.kind == ArtifactKind.CHECKPOINT,
            ArtifactRecord.state == COMMITTED,
        )
        .order_by(ArtifactRecord.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return Checkpoint(
        artifact_id=row.artifact_id, step=row.step or 0, size=row.size, sha256=row.sha256
    )


def live_row_without_commit(session: Session, artifact_id: str) -> ArtifactRecord | None:
    """Our row of ``artifact_id`` unless it is absent or deleted (then None)."""
    row = session.scalars(
        select(ArtifactRecord).where(ArtifactRecord.artifact_id == artifact_id)
    ).first()
    return None if row is None or row.state == DELETED else row


def get_without_commit(session: Session, artifact_id: str) -> ArtifactRecord:
    """The row of ``artifact_id`` (ArtifactNotFound when absent or deleted)."""
    row = live_row_without_commit(session, artifact_id)
    if row is None:
        raise ArtifactNotFound(f"artifact {artifact_id!r} not found", "artifact_id")
    return row


def info(record: ArtifactRecord, study_name: str, number: int | None) -> ArtifactInfo:
    return ArtifactInfo(
        artifact_id=record.artifact_id,
        study_name=study_name,
        trial_id=record.optuna_trial_id,
        trial_number=number,
        kind=ArtifactKind(record.kind),
        filename=record.filename,
        mimetype=record.mimetype,
        step=record.step,
        size=record.size,
        sha256=record.sha256,
        created_at=record.created_at,
    )


def trial_artifacts(ctx: AppContext, optuna_trial_id: int) -> list[ArtifactInfo]:
    """Every artifact of a trial: ours (committed, oldest first), then those that plain
    Optuna code uploaded into the same database (``optuna.artifacts.upload_artifact``)."""
    with ctx.db.session() as session:
        trial = session.scalars(
            select(TrialRecord).where(TrialRecord.optuna_trial_id == optuna_trial_id)
        ).first()
        study_id = trial.study_id if trial else None
        rows = session.scalars(
            select(ArtifactRecord)
            .where(ArtifactRecord.optuna_trial_id == optuna_trial_id)
            .order_by(ArtifactRecord.id)
        ).all()
        study = session.get(StudyRecord, study_id) if study_id is not None else None
    try:
        frozen = ctx.store.storage.get_trial(optuna_trial_id)
    except KeyError as exc:
        raise ArtifactNotFound(f"trial {optuna_trial_id} not found", "trial_id") from exc
    name = study.name if study else _study_name(ctx, frozen)
    known = {row.artifact_id for row in rows}
    out = [info(row, name, frozen.number) for row in rows if row.state == COMMITTED]
    out += _optuna_only(frozen.system_attrs, known, name, optuna_trial_id, frozen.number)
    return out


def _study_name(ctx: AppContext, frozen: Any) -> str:
    """The Optuna study name of a trial the service has no row of (Optuna's storage API
    has no trial -> study look-up: read its tables)."""
    stmt = (
        select(optuna_rows.studies.c.study_name)
        .join(optuna_rows.trials, optuna_rows.trials.c.study_id == optuna_rows.studies.c.study_id)
        .where(optuna_rows.trials.c.trial_id == frozen._trial_id)
    )
    with ctx.db.session() as session:
        return str(session.scalar(stmt))


def _optuna_only(
    attrs: dict[str, Any], known: Iterable[str], study: str, trial_id: int, number: int
) -> list[ArtifactInfo]:
    seen, out = set(known), []
    for key, value in attrs.items():
        if not key.startswith(ARTIFACT_PREFIX) or key[len(ARTIFACT_PREFIX) :] in seen:
            continue
        try:
            meta = json.loads(value) if isinstance(value, str) else dict(value)
        except (TypeError, ValueError):
            continue
        out.append(
            ArtifactInfo(
                artifact_id=str(meta.get("artifact_id", key[len(ARTIFACT_PREFIX) :])),
                study_name=study,
                trial_id=trial_id,
                trial_number=number,
                kind=ArtifactKind.FILE,
                filename=str(meta.get("filename") or "artifact"),
                mimetype=str(meta.get("mimetype") or "application/octet-stream"),
                source="optuna",
            )
        )
    return out


def optuna_artifact_owner(ctx: AppContext, artifact_id: str, trial_id: int | None) -> bool:
    """True when Optuna's metadata of ``trial_id`` names ``artifact_id`` (plain Optuna uploads)."""
    if trial_id is None:
        return False
    try:
        attrs = ctx.store.storage.get_trial(trial_id).system_attrs
    except KeyError:
        return False
    return ARTIFACT_PREFIX + artifact_id in attrs
