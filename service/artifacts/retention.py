"""Retention: delete what no live lease or kept trial needs.

* A running (or queued) trial keeps its latest ``keep_checkpoints`` checkpoints
  (applied whenever it commits one): the latest is what a re-run resumes from.
* A finished trial loses its checkpoints, except the study's best ``keep_best``
  trials (the Pareto front for multi-objective studies), which keep their final
  checkpoint. Models and user files are not touched by retention (every COMPLETE
  trial keeps its model; an admin may delete any artifact).
* Rejected (bad) checkpoints of finished trials are deleted too.

``hpo study gc`` runs :func:`collect` by hand; the reaper runs it for every study
with something to collect.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import TrialState as OptunaState
from sqlalchemy import and_, asc, desc, func, select
from sqlalchemy.orm import Session

from hpo.protocol import ArtifactKind
from service.artifacts.records import ARTIFACT_PREFIX, BAD, COMMITTED, DELETED
from service.core.context import AppContext
from service.storage import optuna_rows
from service.storage.models import ArtifactRecord, StudyRecord, TrialRecord
from service.trials.rows import study_spec
from service.trials.states import TrialState

log = logging.getLogger("hpo.artifacts")
_LIVE = (COMMITTED, BAD)


@dataclass
class GcReport:
    """What one collection did."""

    deleted: int = 0
    freed_bytes: int = 0
    kept_trials: int = 0


def prune_running_without_commit(
    session: Session, optuna_trial_id: int, keep: int
) -> list[ArtifactRecord]:
    """Mark a trial's checkpoints past its ``keep`` newest as deleted; the rows dropped."""
    rows = session.scalars(
        select(ArtifactRecord)
        .where(
            ArtifactRecord.optuna_trial_id == optuna_trial_id,
            ArtifactRecord.kind == ArtifactKind.CHECKPOINT,
            ArtifactRecord.state.in_(_LIVE),
        )
        .order_by(ArtifactRecord.id.desc())
    ).all()
    committed = [r for r in rows if r.state == COMMITTED]
    dropped = committed[keep:] + [r for r in rows if r.state == BAD]
    return _mark_deleted_without_commit(session, dropped)


def _mark_deleted_without_commit(
    session: Session, rows: Iterable[ArtifactRecord]
) -> list[ArtifactRecord]:
    out = []
    for row in rows:
        row.state = DELETED
        if row.optuna_trial_id is not None:
            key = ARTIFACT_PREFIX + row.artifact_id
            optuna_rows.delete_trial_system_attr(session, row.optuna_trial_id, key)
        out.append(row)
    session.flush()
    return out


def remove_files(ctx: AppContext, rows: Iterable[ArtifactRecord]) -> int:
    """Delete the files of ``rows`` from the store (missing ones are fine); bytes freed."""
    from service.artifacts.store import ArtifactNotFound

    freed = 0
    for row in rows:
        with contextlib.suppress(ArtifactNotFound):  # already gone: deleting is idempotent
            ctx.artifacts.remove(row.artifact_id)
        freed += row.size
    return freed


def collect(ctx: AppContext, study: StudyRecord) -> GcReport:
    """Apply the study's retention to its finished trials (see the module docstring)."""
    spec = study_spec(study)
    with ctx.db.session() as session:
        kept = kept_trial_ids(
            session, study.study_id, spec.study_directions, spec.retention.keep_best
        )
        rows = session.scalars(
            select(ArtifactRecord)
            .join(TrialRecord, TrialRecord.optuna_trial_id == ArtifactRecord.optuna_trial_id)
            .where(
                ArtifactRecord.study_id == study.study_id,
                ArtifactRecord.kind == ArtifactKind.CHECKPOINT,
                ArtifactRecord.state.in_(_LIVE),
                TrialRecord.state == TrialState.FINISHED,
            )
            .order_by(ArtifactRecord.id.desc())
        ).all()
        from service.schedules import kept_checkpoints  # PBT parents' checkpoints to come

        needed = kept_checkpoints(session, study)
        to_drop = [r for r in _finished_to_drop(rows, kept) if r.artifact_id not in needed]
        dropped = _mark_deleted_without_commit(session, to_drop)
    report = GcReport(len(dropped), remove_files(ctx, dropped), len(kept))
    if dropped:
        log.info(
            "study %r: %d checkpoint(s) deleted, %d bytes freed",
            study.name,
            report.deleted,
            report.freed_bytes,
        )
    return report


def _finished_to_drop(rows: list[ArtifactRecord], kept: set[int]) -> list[ArtifactRecord]:
    """Newest first: a kept trial keeps its first committed row (its final checkpoint)."""
    seen: set[int] = set()
    out = []
    for row in rows:
        trial = row.optuna_trial_id
        if trial in kept and row.state == COMMITTED and trial not in seen:
            seen.add(trial)
            continue
        out.append(row)
    return out


def kept_trial_ids(session: Session, study_id: int, directions: list[str], k: int) -> set[int]:
    """Optuna trial ids of the best ``k`` complete trials (the Pareto front when several
    objectives): the trials whose final checkpoint is kept."""
    if k <= 0:
        return set()
    if len(directions) > 1:
        from service.studies.records import pareto_front

        return {t.trial_id for t in pareto_front(session, study_id, directions)}
    trials, values = optuna_rows.trials, optuna_rows.trial_values
    by = desc if directions[0] == "maximize" else asc
    rows = session.execute(
        select(trials.c.trial_id)
        .join(values, and_(values.c.trial_id == trials.c.trial_id, values.c.objective == 0))
        .where(trials.c.study_id == study_id, trials.c.state == OptunaState.COMPLETE)
        .order_by(by(values.c.value), trials.c.number)
        .limit(k)
    )
    return {row[0] for row in rows}


def delete(ctx: AppContext, artifact_id: str) -> int:
    """Delete one artifact (an admin's call): its file, Optuna's metadata, our row."""
    from service.artifacts.records import live_row_without_commit
    from service.core.errors import ArtifactNotFound

    with ctx.db.session() as session:
        row = live_row_without_commit(session, artifact_id)
        if row is not None:
            dropped = _mark_deleted_without_commit(session, [row])
        elif optuna_rows.artifact_meta(session, ARTIFACT_PREFIX + artifact_id):
            dropped = [_optuna_only_row_without_commit(session, artifact_id)]
        else:
            raise ArtifactNotFound(f"artifact {artifact_id!r} not found", "artifact_id")
    return remove_files(ctx, dropped)


def _optuna_only_row_without_commit(session: Session, artifact_id: str) -> ArtifactRecord:
    """An artifact plain Optuna code uploaded: drop its metadata; a stand-in row to remove."""
    key = ARTIFACT_PREFIX + artifact_id
    attrs = optuna_rows.trial_system_attrs
    session.execute(attrs.delete().where(attrs.c.key == key))
    return ArtifactRecord(artifact_id=artifact_id, size=0)


def studies_to_collect(ctx: AppContext) -> list[StudyRecord]:
    """Studies with checkpoints of finished trials still held (what the reaper collects)."""
    with ctx.db.session() as session:
        ids = session.scalars(
            select(ArtifactRecord.study_id)
            .join(TrialRecord, TrialRecord.optuna_trial_id == ArtifactRecord.optuna_trial_id)
            .where(
                ArtifactRecord.kind == ArtifactKind.CHECKPOINT,
                ArtifactRecord.state.in_(_LIVE),
                TrialRecord.state == TrialState.FINISHED,
            )
            .distinct()
        ).all()
        return list(session.scalars(select(StudyRecord).where(StudyRecord.study_id.in_(ids))))


def collect_all(ctx: AppContext) -> int:
    """The reaper's pass: collect every study with something to collect; rows deleted."""
    return sum(collect(ctx, study).deleted for study in studies_to_collect(ctx))


def bytes_held(session: Session, study_id: int) -> dict[str, int]:
    """Bytes held per artifact kind by a study's live artifacts (and ``total``)."""
    rows = session.execute(
        select(ArtifactRecord.kind, func.coalesce(func.sum(ArtifactRecord.size), 0), func.count())
        .where(ArtifactRecord.study_id == study_id, ArtifactRecord.state.in_(_LIVE))
        .group_by(ArtifactRecord.kind)
    ).all()
    held = {str(kind): int(total) for kind, total, _ in rows}
    held["total"] = sum(held.values())
    held["count"] = sum(int(n) for *_, n in rows)
    return held
