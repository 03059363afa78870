"""The FastAPI application factory: ``create_app(settings)``.

Everything the handlers need is built here once (database, Optuna storage,
metrics) and stored on ``app.state.ctx``; routers are split by resource and
stay thin. A background task reaps expired leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

import hpo
from hpo.protocol import API_PREFIX
from service import trials
from service.api import (
    artifacts,
    health,
    lease_study,
    protocol,
    specs,
    studies,
    tokens,
    workers,
)
from service.api.errors import install_handlers
from service.api.input_guard import install_nul_schema, reject_nul
from service.artifacts.retention import collect_all
from service.core import migrate
from service.core.config import Settings
from service.core.context import AppContext
from service.core.middleware import BodyLimitMiddleware, HeadersAndMetricsMiddleware
from service.dashboard import router
from service.trials.refill import refill_loop
from service.trials.requests import forget_old_requests

log = logging.getLogger("hpo.server")


class SchemaOutdated(RuntimeError):
    """The database schema is behind the code and auto-migration is off."""


def prepare_database(ctx: AppContext) -> None:
    """Upgrade the schema (or refuse to start when told not to migrate)."""
    if ctx.settings.auto_migrate:
        migrate.upgrade(ctx.settings.database_url)
    elif not migrate.is_up_to_date(ctx.db.engine):
        raise SchemaOutdated(
            "the database schema is not up to date and HPO_AUTO_MIGRATE is off; "
            "run `hpo db upgrade` first"
        )


async def _reaper(ctx: AppContext) -> None:
    """Expire overdue leases every ``reaper_interval_s`` (also checked at lease time)."""
    while True:
        await asyncio.sleep(ctx.settings.reaper_interval_s)
        try:
            await run_in_threadpool(trials.reap_all, ctx)
            await run_in_threadpool(collect_all, ctx)  # retention of finished trials
            await run_in_threadpool(forget_old_requests, ctx)  # kept lease answers
        except Exception:  # the reaper must survive a database outage
            log.warning("lease reaper failed; will retry", exc_info=True)


def create_app(settings: Settings, ctx: AppContext | None = None) -> FastAPI:
    """Build the app. ``ctx`` may be passed by tests that share one context."""
    ctx = ctx or AppContext.build(settings)
    prepare_database(ctx)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_reaper(ctx))]
        if ctx.settings.proposal_pool > 0:  # proposals drawn ahead of leases
            tasks.append(asyncio.create_task(refill_loop(ctx)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="hpo-service",
        version=hpo.__version__,
        description="Hyperparameter optimization as a service (Optuna studies, GPU workers).",
        lifespan=lifespan,
        dependencies=[Depends(reject_nul)],
    )
    app.state.ctx = ctx
    install_handlers(app)
    install_nul_schema(app)
    app.include_router(health.router)
    for module in (studies, specs, protocol, lease_study, artifacts, workers, tokens):
        app.include_router(module.router, prefix=API_PREFIX)
    router.mount(app)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, streamed_suffix="/artifacts"
    )
    app.add_middleware(HeadersAndMetricsMiddleware, metrics=ctx.metrics)
    return app
