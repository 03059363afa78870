"""Idempotent leases: a lease request with a ``request_id`` is answered once.

The first request with an id claims it (one INSERT into ``hpo_lease_requests``,
the primary key decides across server processes and replicas), leases, and
stores its answer when it leased anything. A retry of the same id (a timeout or
a dropped connection on the client's side) gets that stored answer: the same
trials and leases, never a second set. A retry that arrives while the first
attempt is still being answered waits for it. An answer without trials is not
kept (the id is released), so a retry after an empty answer may lease afresh.

Not covered: a server that dies between leasing and storing the answer; the
retry then waits until the claim is older than ``lease_ttl_s`` and leases anew,
and the first attempt's leases expire (their trials run again: nothing lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from hpo.protocol import LeaseRequest, LeaseResponse, NoWork, NoWorkCode
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import InvalidRequest
from service.storage.pool_models import LeaseRequestRecord

#: how often a retry looks whether the first attempt has answered
POLL_S = 0.1


async def lease_once(
    ctx: AppContext, body: LeaseRequest, lease: Callable[[], Awaitable[LeaseResponse]]
) -> LeaseResponse:
    """``lease()`` at most once per ``body.request_id`` (every time without one)."""
    started = time.perf_counter()
    try:
        if body.request_id is None:
            return await lease()
        return await _once(ctx, body, body.request_id, lease)
    finally:
        ctx.metrics.lease_latency.observe(time.perf_counter() - started)


async def _once(
    ctx: AppContext,
    body: LeaseRequest,
    request_id: str,
    lease: Callable[[], Awaitable[LeaseResponse]],
) -> LeaseResponse:
    deadline = time.monotonic() + body.wait_s + ctx.settings.lease_ttl_s
    while True:
        found = await run_in_threadpool(_claim, ctx, request_id, body.worker_id)
        if found is None:
            return await _answer(ctx, request_id, lease)
        if isinstance(found, LeaseResponse):
            return found
        if time.monotonic() >= deadline:
            message = f"lease request {request_id!r} is still being answered"
            reason = NoWork(code=NoWorkCode.BUSY, message=message)
            return LeaseResponse(retry_after_s=1.0, reason=message, reasons=[reason])
        await asyncio.sleep(POLL_S)


async def _answer(
    ctx: AppContext, request_id: str, lease: Callable[[], Awaitable[LeaseResponse]]
) -> LeaseResponse:
    """We hold the claim: lease, then keep the answer (or release the id)."""
    try:
        answer = await lease()
    except BaseException:
        await run_in_threadpool(_release, ctx, request_id)
        raise
    if answer.trials:
        await run_in_threadpool(_store, ctx, request_id, answer)
    else:
        await run_in_threadpool(_release, ctx, request_id)
    return answer


def _claim(ctx: AppContext, request_id: str, worker_id: str) -> LeaseResponse | bool | None:
    """None: the claim is ours. A LeaseResponse: the stored answer. True: another
    attempt is answering it now."""
    now = utcnow()
    try:
        with ctx.db.session() as session:
            session.add(
                LeaseRequestRecord(request_id=request_id, worker_id=worker_id, created_at=now)
            )
            session.flush()
        return None
    except IntegrityError:
        pass
    with ctx.db.session() as session:
        row = session.get(LeaseRequestRecord, request_id)
        if row is None:  # released meanwhile: claim again
            return True
        if row.worker_id != worker_id:
            raise InvalidRequest(
                f"request_id: {request_id!r} was sent by another worker", "request_id"
            )
        if row.response is not None:
            return LeaseResponse.model_validate(row.response)
        if row.created_at < now - timedelta(seconds=ctx.settings.lease_ttl_s):
            session.delete(row)  # its server died before answering: claim afresh
        return True


def _store(ctx: AppContext, request_id: str, answer: LeaseResponse) -> None:
    with ctx.db.session() as session:
        session.execute(
            update(LeaseRequestRecord)
            .where(LeaseRequestRecord.request_id == request_id)
            .values(response=answer.model_dump(mode="json"))
        )


def _release(ctx: AppContext, request_id: str) -> None:
    with ctx.db.session() as session:
        session.execute(
            delete(LeaseRequestRecord).where(
                LeaseRequestRecord.request_id == request_id,
                LeaseRequestRecord.response.is_(None),
            )
        )


def forget_old_requests(ctx: AppContext, before: datetime | None = None) -> int:
    """Drop kept answers older than ``before`` (default: ``lease_request_ttl_s`` ago;
    the reaper calls it)."""
    if before is None:
        before = utcnow() - timedelta(seconds=ctx.settings.lease_request_ttl_s)
    with ctx.db.session() as session:
        result = session.execute(
            delete(LeaseRequestRecord).where(LeaseRequestRecord.created_at < before)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def stored_ids(ctx: AppContext) -> list[str]:
    """Request ids with a kept answer (tests, diagnostics)."""
    with ctx.db.session() as session:
        query = select(LeaseRequestRecord.request_id).where(LeaseRequestRecord.response.isnot(None))
        return list(session.scalars(query))
