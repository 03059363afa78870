"""A study's diagnosis: the findings of its finished trials, aggregated into spec edits.

The per-trial findings are stored when each trial finishes
(:mod:`service.trials.findings`); :func:`service.studies.proposals.diagnose_study` looks
for regions of the search space where they cluster (for example "9 of 12 adam
trials with lr > 0.02 diverged") and proposes the edit that avoids them.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.protocol import TrialOutcome
from hpo.schemas import StudyDiagnosis
from service.storage.models import StudyRecord, TrialRecord
from service.studies import proposals
from service.trials.states import TrialState

#: The diagnosis reads the study's latest finished trials, at most this many: where the
#: search is now, and a bounded cost (the split search over 10,000 trials took 6 s).
MAX_TRIALS = 2000


def study_diagnosis(session: Session, record: StudyRecord) -> StudyDiagnosis:
    """The findings per kind and the proposed spec edits of one study (its latest
    ``MAX_TRIALS`` finished trials)."""
    rows = session.execute(
        select(
            TrialRecord.number,
            TrialRecord.final_state,
            TrialRecord.params,
            TrialRecord.value,
            TrialRecord.findings,
        )
        .where(
            TrialRecord.study_id == record.study_id,
            TrialRecord.state == TrialState.FINISHED,
            TrialRecord.number.is_not(None),
        )
        .order_by(TrialRecord.number.desc())
        .limit(MAX_TRIALS)
    ).all()
    trials = [
        proposals.TrialRecord(
            number=row.number,
            state=row.final_state or TrialOutcome.FAIL,
            params=row.params or {},
            value=row.value,
            findings=row.findings or [],
        )
        for row in rows
    ]
    kinds = Counter(str(kind) for t in trials for kind in {f.kind for f in t.findings})
    return StudyDiagnosis(
        study=record.name,
        trials=len(trials),
        findings=dict(sorted(kinds.items())),
        proposals=proposals.diagnose_study(trials, record.spec),
    )
