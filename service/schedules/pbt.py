"""Population-based training on the service (Jaderberg et al. 2017).

Every segment of a member is its own Optuna trial with fixed params and its
lineage in user attributes (``pbt_member``, ``pbt_segment``, ``pbt_parent``: the
number of the trial whose checkpoint it starts from, ``pbt_start_step``,
``pbt_changed``: what explore changed and whom exploit copied). Segments are
rows of ``hpo_schedule_segments``:

    pending --materialize--> waiting (a WAITING Optuna trial) --lease--> leased --end--> done

* The first lease of the study inserts the ``population_size`` first segments
  (their params sampled by the study's sampler when leased).
* A segment's worker is told ``pause`` at the report of its ``end_step``; its
  hand-back completes the segment's trial with the value there.
* The segment's end decides the member's next segment under the study lock
  (a row lock on PostgreSQL, the write lock on SQLite): the member is ranked
  among the members whose segments ended at the same step; in the bottom
  ``quantile`` it copies the checkpoint of one in the top ``quantile`` (exploit)
  and explores its params; else it continues from its own checkpoint. The unique
  ``(study, member, segment)`` makes a second decision fail: no member doubles;
  every ended segment has its successor (also one that failed: then it copies
  a top member, or retries from its own start), so none is lost.
* A crashed or preempted segment is re-leased like any trial: from its own
  latest checkpoint, or its parent's when it has none yet.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optuna.trial import TrialState as OptunaState
from optuna.trial import create_trial
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hpo.protocol import ArtifactKind, Checkpoint
from hpo.schedules import PbtSchedule
from hpo.spec import CategoricalParam, FloatParam, IntParam, Param, StudySpec
from service.artifacts.records import COMMITTED, latest_checkpoint_without_commit
from service.core.context import AppContext
from service.core.db import utcnow
from service.storage.models import ArtifactRecord, StudyRecord
from service.storage.schedule_models import SegmentRecord

log = logging.getLogger("hpo.schedules")

PENDING, CREATING, WAITING, LEASED, DONE = "pending", "creating", "waiting", "leased", "done"


def seed_population_without_commit(
    session: Session, study: StudyRecord, pbt: PbtSchedule, now: datetime
) -> None:
    """The first segment of every member (once; call under the study lock)."""
    if session.scalar(select(SegmentRecord.id).where(SegmentRecord.study_id == study.study_id)):
        return
    for member in range(pbt.population_size):
        session.add(_row(study.study_id, member, 0, 0, pbt.perturbation_interval, now))


def _row(study_id: int, member: int, segment: int, start: int, end: int, now: datetime) -> Any:
    return SegmentRecord(
        study_id=study_id,
        member=member,
        segment=segment,
        start_step=start,
        end_step=end,
        state=PENDING,
        created_at=now,
        updated_at=now,
    )


def materialize(ctx: AppContext, study: StudyRecord) -> int:
    """Create the WAITING Optuna trial of every pending segment (each claimed by one
    compare-and-set first, so two servers never create two); how many were made."""
    with ctx.db.session() as session:
        pending = session.scalars(
            select(SegmentRecord).where(
                SegmentRecord.study_id == study.study_id, SegmentRecord.state == PENDING
            )
        ).all()
        claimed = [row for row in pending if _move(session, row.id, PENDING, CREATING)]
        rows = [
            Claim(r.id, r.member, r.segment, r.start_step, r.params, r.changed, r.parent_trial_id)
            for r in claimed
        ]
    for claim in rows:
        create_claimed(ctx, study, claim)
    return len(rows)


@dataclass(frozen=True)
class Claim:
    """A segment row this server moved to ``creating``: what its trial is made of."""

    row_id: int
    member: int
    segment: int
    start_step: int
    params: dict[str, Any] | None
    changed: dict[str, Any] | None
    parent_trial_id: int | None


def create_claimed(ctx: AppContext, study: StudyRecord, claim: Claim) -> int:
    """Create the claimed segment's WAITING trial and record it (``creating ->
    waiting``). When the row was taken meanwhile (the repair gave a stuck claim to
    another server, which created the trial), this trial is an orphan: it fails at
    once so that it never runs beside the segment's own."""
    storage = ctx.store.storage
    parent = claim.parent_trial_id
    attrs = {
        "pbt_member": claim.member,
        "pbt_segment": claim.segment,
        "pbt_start_step": claim.start_step,
        "pbt_parent": None if parent is None else storage.get_trial(parent).number,
        "pbt_changed": claim.changed or {},
    }
    template = create_trial(
        state=OptunaState.WAITING,
        system_attrs={"fixed_params": claim.params or {}},
        user_attrs=attrs,
    )
    trial_id = storage.create_new_trial(study.study_id, template_trial=template)
    with ctx.db.session() as session:
        if _move(session, claim.row_id, CREATING, WAITING, optuna_trial_id=trial_id):
            return trial_id
        linked = session.scalar(
            select(SegmentRecord.optuna_trial_id).where(SegmentRecord.id == claim.row_id)
        )
    if linked != trial_id:
        storage.set_trial_state_values(trial_id, OptunaState.FAIL)
        log.warning(
            "PBT %r: member %d segment %d got its trial elsewhere; trial %d failed unused",
            study.name,
            claim.member,
            claim.segment,
            trial_id,
        )
    return trial_id


def _move(session: Session, row_id: int, frm: str, to: str, **values: Any) -> bool:
    done = session.execute(
        update(SegmentRecord)
        .where(SegmentRecord.id == row_id, SegmentRecord.state == frm)
        .values(state=to, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def segment_of(session: Session, optuna_trial_id: int) -> SegmentRecord | None:
    """The segment an Optuna trial runs (None: not a PBT segment)."""
    return session.scalars(
        select(SegmentRecord).where(SegmentRecord.optuna_trial_id == optuna_trial_id)
    ).first()


def ready_segments(session: Session, study_id: int) -> int:
    """Segments whose WAITING trial may be leased now."""
    rows = session.scalars(
        select(SegmentRecord.id).where(
            SegmentRecord.study_id == study_id, SegmentRecord.state == WAITING
        )
    )
    return len(list(rows))


def granted_without_commit(
    session: Session, row: SegmentRecord, params: dict[str, Any]
) -> Checkpoint | None:
    """A segment was leased: it is ``leased`` (its params recorded); the parent's
    checkpoint it starts from (None: a fresh start)."""
    if row.state == WAITING:
        _move(session, row.id, WAITING, LEASED, params=row.params or dict(params))
    return inherited_checkpoint(session, row)


def inherited_checkpoint(session: Session, row: SegmentRecord) -> Checkpoint | None:
    """The parent's checkpoint the segment starts from, as a resume point."""
    if row.resume_artifact_id is None:
        return None
    art = session.scalars(
        select(ArtifactRecord).where(ArtifactRecord.artifact_id == row.resume_artifact_id)
    ).first()
    if art is None:
        return None
    return Checkpoint(
        artifact_id=art.artifact_id,
        step=art.step or 0,
        size=art.size,
        sha256=art.sha256,
        inherited_from=row.parent_trial_id,
    )


def decide_without_commit(
    session: Session,
    study: StudyRecord,
    spec: StudySpec,
    row: SegmentRecord,
    reached: bool,
    value: float | None,
    total_steps: int,
) -> bool:
    """The segment ended (``reached``: complete at its end step): mark it done and insert
    the member's next segment (under the study lock); False when the member is finished
    or the segment was decided already."""
    pbt = spec.schedule
    assert isinstance(pbt, PbtSchedule)
    now = utcnow()
    if row.state == DONE or not _move(
        session, row.id, row.state, DONE, value=value if reached else None
    ):
        return False
    if reached and row.end_step >= total_steps:
        return False
    peers = _peers_at(session, study.study_id, row.end_step)
    rng = random.Random(study.seed * 1_000_003 + row.member * 7_919 + row.segment)
    maximize = spec.study_directions[0] == "maximize"
    parent, start, params, changed = _choose(session, row, peers, pbt, spec, rng, maximize, reached)
    nxt = _row(study.study_id, row.member, row.segment + 1, start, 0, now)
    nxt.end_step = min(total_steps, start + pbt.perturbation_interval)
    nxt.parent_trial_id, nxt.params, nxt.changed = parent, params, changed
    nxt.resume_artifact_id = None if parent is None else checkpoint_at(session, parent, start)
    try:
        with session.begin_nested():
            session.add(nxt)
    except IntegrityError:  # decided already (another server, a repeated end)
        return False
    log.info(
        "PBT %r: member %d segment %d from step %d (parent trial %s) changed %s",
        study.name,
        row.member,
        row.segment + 1,
        start,
        parent,
        changed,
    )
    return True


def checkpoint_at(session: Session, trial_id: int, step: int) -> str | None:
    """The artifact id of the trial's newest committed checkpoint of ``step`` (else its
    latest: a re-run may have trained past its segment's end before it was told)."""
    row = session.scalars(
        select(ArtifactRecord.artifact_id)
        .where(
            ArtifactRecord.optuna_trial_id == trial_id,
            ArtifactRecord.kind == ArtifactKind.CHECKPOINT,
            ArtifactRecord.state == COMMITTED,
            ArtifactRecord.step == step,
        )
        .order_by(ArtifactRecord.id.desc())
        .limit(1)
    ).first()
    if row is not None:
        return row
    latest = latest_checkpoint_without_commit(session, trial_id)
    return None if latest is None else latest.artifact_id


def live_resume_artifacts(session: Session, study_id: int) -> set[str]:
    """Checkpoints that segments not yet done start from (retention keeps them)."""
    rows = session.scalars(
        select(SegmentRecord.resume_artifact_id).where(
            SegmentRecord.study_id == study_id,
            SegmentRecord.state != DONE,
            SegmentRecord.resume_artifact_id.is_not(None),
        )
    )
    return {r for r in rows if r is not None}


def _peers_at(session: Session, study_id: int, step: int) -> list[SegmentRecord]:
    """Segments that ended complete at ``step``: the members ranked there."""
    return list(
        session.scalars(
            select(SegmentRecord)
            .where(
                SegmentRecord.study_id == study_id,
                SegmentRecord.state == DONE,
                SegmentRecord.end_step == step,
                SegmentRecord.value.is_not(None),
            )
            .execution_options(populate_existing=True)  # the ended row was just updated
        ).all()
    )


def _choose(
    session: Session,
    row: SegmentRecord,
    peers: list[SegmentRecord],
    pbt: PbtSchedule,
    spec: StudySpec,
    rng: random.Random,
    maximize: bool,
    reached: bool,
) -> tuple[int | None, int, dict[str, Any] | None, dict[str, Any]]:
    """(parent trial, start step, params, what changed) of the member's next segment."""
    ranked = sorted(
        (p for p in peers if p.value is not None), key=lambda p: p.value or 0.0, reverse=maximize
    )
    n = math.ceil(len(ranked) * pbt.quantile) if len(ranked) >= 2 else 0
    top = ranked[:n]
    bottom = {p.member for p in ranked[len(ranked) - n :]} if n else set()
    mine = row.params or {}
    losing = (row.member in bottom and row.member not in {p.member for p in top}) or not reached
    if losing and top:
        donor = rng.choice(top)
        params, changes = explore(donor.params or {}, pbt, spec, rng)
        changes["exploited_member"] = donor.member
        return donor.optuna_trial_id, row.end_step, params, changes
    if not reached:  # failed, no member to copy yet: retry its segment afresh from its start
        params, changes = explore(mine, pbt, spec, rng)
        return row.parent_trial_id, row.start_step, params, changes
    return row.optuna_trial_id, row.end_step, dict(mine), {}


def explore(
    params: dict[str, Any], pbt: PbtSchedule, spec: StudySpec, rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PBT's explore: each mutated parameter multiplied by a factor (clipped into its
    range) or resampled from the space; (new params, {name: [old, new]})."""
    out, changed = dict(params), {}
    for name, mutation in pbt.mutations.items():
        param = spec.space[name]
        old = params.get(name)
        factors = mutation.factors
        fresh = old is None or mutation.resample or factors is None
        if fresh or rng.random() < pbt.resample_probability:
            new = resample(param, rng)
        else:
            assert factors is not None
            new = _clip(param, float(old or 0.0) * rng.choice(factors))
        if new != old:
            out[name], changed[name] = new, [old, new]
    return out, changed


def resample(param: Param, rng: random.Random) -> Any:
    """A value of ``param`` drawn uniformly (log-uniformly on a log scale)."""
    if isinstance(param, CategoricalParam):
        return rng.choice(param.choices)
    if param.log:
        value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    else:
        value = rng.uniform(param.low, param.high)
    return _clip(param, value)


def _clip(param: Param, value: float) -> Any:
    assert isinstance(param, FloatParam | IntParam)
    value = min(max(value, param.low), param.high)
    if isinstance(param, IntParam):
        return int(
            min(
                max(round((value - param.low) / param.step) * param.step + param.low, param.low),
                param.high,
            )
        )
    if param.step is not None:
        k = round((value - param.low) / param.step)
        return min(param.high, round(param.low + k * param.step, 12))
    return float(value)
