"""A success answer is sent only after its transaction committed.

Found by the 32-leaser test on two servers: ``POST /workers/register``
answered 201 and the worker's very next lease got 404 "not registered",
because FastAPI (>= 0.118) runs a ``yield`` dependency's exit code (our
commit) *after* the response was sent. Worse, a commit that then fails
(database gone) left the client holding a 201 for a write that never
happened. These cases make the commit fail and expect the failure in the
answer, and that nothing was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.storage.models import StudyRecord, WorkerRecord
from tests.conftest import Tokens
from tests.service.lease_helpers import spec

pytestmark = pytest.mark.faults


@pytest.fixture
def failing_commit(monkeypatch) -> Iterator[None]:
    """Sessions that flushed a write fail their commit as if the database dropped."""
    real = Session.commit

    def flushed(session: Session, _ctx: Any) -> None:
        session.info["wrote"] = True

    def commit(self: Session) -> None:
        if self.info.pop("wrote", False):
            self.rollback()
            err = OperationalError("COMMIT", {}, Exception("server closed the connection"))
            err.connection_invalidated = True
            raise err
        real(self)

    event.listen(Session, "after_flush", flushed)
    monkeypatch.setattr(Session, "commit", commit)
    yield
    event.remove(Session, "after_flush", flushed)


def _count(ctx: Any, model: Any) -> int:
    with ctx.db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_register_fails_loudly_when_its_commit_fails(client, tokens: Tokens, ctx, request) -> None:
    request.getfixturevalue("failing_commit")
    resp = client.post(
        "/api/v1/workers/register", json={"hostname": "box"}, headers=Tokens.header(tokens.worker)
    )
    assert resp.status_code == 503, resp.text
    assert "database" in resp.json()["detail"]
    assert _count(ctx, WorkerRecord) == 0


def test_create_study_fails_loudly_when_its_commit_fails(
    client, tokens: Tokens, ctx, request
) -> None:
    request.getfixturevalue("failing_commit")
    resp = client.post(
        "/api/v1/studies", json=spec("nocommit"), headers=Tokens.header(tokens.admin)
    )
    assert resp.status_code == 503, resp.text
    assert _count(ctx, StudyRecord) == 0
