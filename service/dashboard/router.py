"""``mount(app)``: the dashboard's pages, JSON API and static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from hpo.protocol import DASHBOARD_PREFIX
from service.dashboard import api, login, pages, static
from service.dashboard.state import DashboardState, prewarm


def mount(app: FastAPI) -> None:
    """Wire the dashboard into ``app`` (its AppContext must already be on ``app.state``)."""
    app.state.dashboard = dash = DashboardState(app.state.ctx)
    prewarm(dash, warm=lambda study_id: api.warm_study(dash, study_id))
    app.add_exception_handler(login.LoginRequired, login.login_redirect)
    app.include_router(static.router)
    app.include_router(login.router)
    app.include_router(pages.router)
    app.include_router(api.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(DASHBOARD_PREFIX + "/", 307)
