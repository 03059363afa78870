"""PBT segments left ``creating`` by a crash inside ``materialize`` are repaired on the
next lease (real app, real Optuna storage, SQLite and PostgreSQL; the worker's side
spoken over HTTP by the test, no training)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from service.core.db import utcnow
from service.schedules import pbt, pbt_repair
from service.storage.models import StudyRecord
from service.storage.schedule_models import SegmentRecord
from tests.conftest import Tokens
from tests.service.lease_helpers import Worker, create_study, optuna_trials
from tests.service.test_schedules_protocol import LR, PBT, _end_segment


def _study(client: Any, tokens: Tokens, before_end: Any = None) -> Worker:
    """A 2-member PBT study whose member 0 ended its first segment: its second segment is
    decided and materialized (WAITING); member 1 still trains its first."""
    space = {"space": LR, "fixed": {"epochs": 2, "optimizer": "sgd"}}
    create_study(client, tokens, name="p", schedule=PBT, budget={"max_trials": 4}, **space)
    worker = Worker(client, tokens.worker)
    first, _second = worker.trial(), worker.trial()
    undo = before_end() if before_end else None
    assert _end_segment(worker, first, 0.9)["state"] == "complete"
    if undo:
        undo()
    return worker


def _row(ctx: Any, member: int, segment: int) -> SegmentRecord:
    with ctx.db.session() as session:
        row = session.scalars(
            select(SegmentRecord).where(
                SegmentRecord.member == member, SegmentRecord.segment == segment
            )
        ).one()
        session.expunge(row)
        return row


def _set(ctx: Any, row_id: int, **values: Any) -> None:
    with ctx.db.session() as session:
        session.execute(update(SegmentRecord).where(SegmentRecord.id == row_id).values(**values))


def _of_segment(ctx: Any, member: int, segment: int) -> list[Any]:
    return [
        t
        for t in optuna_trials(ctx, "p")
        if (t.user_attrs.get("pbt_member"), t.user_attrs.get("pbt_segment")) == (member, segment)
    ]


def _second_segment(client: Any, tokens: Tokens, ctx: Any) -> tuple[Worker, SegmentRecord, Any]:
    """:func:`_study`'s worker, with member 0's second segment: its row and its trial."""
    worker = _study(client, tokens)
    row = _row(ctx, 0, 1)
    [made] = _of_segment(ctx, 0, 1)
    return worker, row, made


def test_a_claim_that_died_before_the_trial_was_made_is_made_again(
    client: Any, tokens: Tokens, ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = ctx.store.storage
    real = storage.create_new_trial

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the server died here")

    def crashing() -> Any:
        monkeypatch.setattr(storage, "create_new_trial", crash)
        return lambda: monkeypatch.setattr(storage, "create_new_trial", real)

    worker = _study(client, tokens, crashing)  # the decision is made; materializing crashes
    row = _row(ctx, 0, 1)
    assert row.state == pbt.CREATING and row.optuna_trial_id is None
    assert _of_segment(ctx, 0, 1) == []
    assert worker.lease()["trial"] is None  # a fresh claim may be a live server's: wait

    _set(ctx, row.id, updated_at=utcnow() - 2 * pbt_repair.GRACE)  # the claim is old
    trial = worker.trial()
    [made] = _of_segment(ctx, 0, 1)
    assert trial["trial_id"] == made._trial_id and trial["params"] == made.params
    assert trial["resume"] is not None  # it starts from member 0's checkpoint, as decided
    assert _row(ctx, 0, 1).optuna_trial_id == made._trial_id
    assert _row(ctx, 0, 1).state == pbt.LEASED


def test_a_claim_that_died_after_the_trial_was_made_is_linked_to_it(
    client: Any, tokens: Tokens, ctx: Any
) -> None:
    worker, row, made = _second_segment(client, tokens, ctx)
    assert row.state == pbt.WAITING
    # The server died between creating the trial and recording it (a fresh claim: the
    # repair links it at once, since the trial is there).
    _set(ctx, row.id, state=pbt.CREATING, optuna_trial_id=None)
    trial = worker.trial()
    assert trial["trial_id"] == made._trial_id  # that trial, not a second one
    assert [t._trial_id for t in _of_segment(ctx, 0, 1)] == [made._trial_id]
    assert _row(ctx, 0, 1).state == pbt.LEASED


def test_a_late_creator_whose_claim_was_given_away_fails_its_trial(
    client: Any, tokens: Tokens, ctx: Any
) -> None:
    worker, row, made = _second_segment(client, tokens, ctx)
    with ctx.db.session() as session:
        study = session.scalars(select(StudyRecord).where(StudyRecord.name == "p")).one()
        session.expunge(study)
    # A slow server still holds an old claim of the row, which another one has completed.
    _set(ctx, row.id, state=pbt.CREATING)
    claim = pbt.Claim(row.id, 0, 1, row.start_step, row.params, row.changed, row.parent_trial_id)
    _set(ctx, row.id, state=pbt.WAITING)
    late = pbt.create_claimed(ctx, study, claim)
    assert late != made._trial_id
    assert ctx.store.storage.get_trial(late).state.name == "FAIL"  # never runs
    assert _row(ctx, 0, 1).optuna_trial_id == made._trial_id
    assert worker.trial()["trial_id"] == made._trial_id
