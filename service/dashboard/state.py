"""The dashboard's per-app state (caches, templates) and the dependencies that reach it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from service.core.context import AppContext
from service.dashboard import queries
from service.dashboard.cache import FigureCache
from service.dashboard.charts_base import fmt
from service.dashboard.frame import FrameCache, StudyFrame
from service.dashboard.frame_study import FrozenCache
from service.dashboard.static import asset_url

HERE = Path(__file__).parent
log = logging.getLogger("hpo.dashboard")


class DashboardState:
    """Caches shared by every dashboard request of one app."""

    def __init__(self, ctx: AppContext, poll_interval_s: float = 3.0) -> None:
        self.ctx = ctx
        self.frames = FrameCache()
        self.frozen = FrozenCache()
        self.figures = FigureCache()
        self.poll_interval_s = poll_interval_s
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.autoescape = True  # every {{ value }} is HTML-escaped
        self.templates.env.filters["fmt"] = fmt
        self.templates.env.globals.update(
            asset=asset_url, prefix="/dashboard", api="/api/v1/dashboard",
            poll_ms=int(poll_interval_s * 1000),
        )  # fmt: skip

    def frame(self, study_id: int) -> StudyFrame:
        with self.ctx.db.session() as session:
            return self.frames.get(session, study_id)

    def warm(self, study_id: int) -> None:
        """Load a study's frame in the background (the page's charts will need it)."""

        def run() -> None:
            try:
                self.frame(study_id)
            except Exception:  # noqa: BLE001 - best effort: the chart requests report errors
                log.debug("warming study %s failed", study_id, exc_info=True)

        threading.Thread(target=run, name=f"dashboard-warm-{study_id}", daemon=True).start()


def _prewarm_libraries() -> None:
    """Do the one-off work the first chart requests would otherwise wait for (Plotly's
    trace validators, the importance evaluator's imports): seconds on a small machine."""
    try:
        import optuna
        import plotly.graph_objects as go

        study = optuna.create_study(direction="maximize")
        study.optimize(lambda t: t.suggest_float("x", 0, 1) - t.suggest_float("y", 0, 1), 12)
        optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        )

        for trace in (go.Box(y=[1]), go.Scatter(y=[1]), go.Violin(y=[1]), go.Contour(z=[[1]])):
            go.Figure(trace).to_json()
        go.Figure(go.Parcoords(dimensions=[{"values": [1]}])).to_json()
    except Exception:  # noqa: BLE001 - best effort
        log.debug("prewarming the chart libraries failed", exc_info=True)


def prewarm(dash: DashboardState, studies: int = 4) -> None:
    """In the background: warm the libraries, then load the trial tables of the most
    recent studies, so that the first page view after a start does not wait for them."""

    def run() -> None:
        _prewarm_libraries()
        try:
            with dash.ctx.db.session() as session:
                recent = [row.study_id for row in queries.list_studies(session)][-studies:]
            for study_id in reversed(recent):
                dash.frame(study_id)
        except Exception:  # noqa: BLE001 - best effort
            log.debug("prewarming study frames failed", exc_info=True)

    threading.Thread(target=run, name="dashboard-prewarm", daemon=True).start()


def get_dashboard(request: Request) -> DashboardState:
    return request.app.state.dashboard  # type: ignore[no-any-return]


DashboardDep = Annotated[DashboardState, Depends(get_dashboard)]
