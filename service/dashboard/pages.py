"""Server-rendered dashboard pages (Jinja2, autoescaped). Data comes from ``api.py``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from hpo.protocol import API_PREFIX, DASHBOARD_PREFIX
from hpo.schemas import ShownState
from hpo.settings import OPTIMIZER
from service.core.errors import StudyNotFound
from service.dashboard import (
    artifacts_view,
    charts_responsible,
    overview,
    queries,
    schedule_view,
    trial_view,
)
from service.dashboard.charts import charts_for
from service.dashboard.charts_schedules import SCHEDULE_CHARTS
from service.dashboard.frame import load_meta
from service.dashboard.login import CSP, PREFIX, PageUser
from service.dashboard.state import DashboardDep, DashboardState
from service.dashboard.table import STATES
from service.studies.status import live_fleet

router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: Ids and numbers as the database stores them (larger ones are a 422, not an overflow).
StudyId = Annotated[int, Path(ge=0, le=2**31 - 1, description="the study's id")]
TrialNumber = Annotated[int, Path(ge=0, le=2**31 - 1, description="the trial's number")]
API = API_PREFIX + DASHBOARD_PREFIX
#: Trial states of the study header, in the API's order (``TrialCounts`` fields).
SHOWN_STATES = [s.value for s in ShownState]


def render(
    dash: DashboardState, request: Request, template: str, user: Any, **context: Any
) -> HTMLResponse:
    """Render a page with the common context and a strict Content-Security-Policy."""
    context |= {
        "auth": dash.ctx.settings.auth,
        "user": user.name,
        "role": user.role,
        "poll_ms": int(dash.poll_interval_s * 1000),
    }
    response = dash.templates.TemplateResponse(request, template, context)
    response.headers["Content-Security-Policy"] = CSP
    return response


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, dash: DashboardDep, user: PageUser) -> Response:
    """The studies page (rows come from the JSON API)."""
    return render(dash, request, "studies.html", user, page="studies")


def _optimizer_choices(meta: Any) -> list[str]:
    """The optimizers a study's space offers (the trials table filters by them)."""
    if meta.spec is None:
        return []
    choices: list[str] = []
    for name, param in meta.spec.space.items():
        if meta.setting_of(name) == OPTIMIZER:
            choices += [str(c) for c in getattr(param, "choices", []) if str(c) not in choices]
    return choices


def first_chart(dash: DashboardState, study_id: int, charts: list[Any]) -> str | None:
    """The first chart's answer when it is cached (the start-up warming or an earlier
    visit built it), for the page to carry in a JSON data block: a first visit then
    draws it without waiting for a request. Any cached version will do: the page's
    first poll asks again when it is behind. ``<`` is escaped (``\\u003c``), so the
    JSON cannot close its ``<script type="application/json">``."""
    if not charts:
        return None
    body = dash.answers.peek((study_id, "chart", charts[0].name))
    return None if body is None else str(body).replace("<", "\\u003c")


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(study_id: StudyId, request: Request, dash: DashboardDep, user: PageUser) -> Response:
    """A study: header, charts and the trials table."""
    with dash.ctx.db.session() as session:
        meta = load_meta(session, study_id)
        workers = queries.active_workers(session).get(study_id, [])
        fleet = live_fleet(session, dash.ctx.settings.worker_timeout_s)
        summary = overview.summary(meta, dash.header(session, meta), workers, fleet)
        stored = artifacts_view.study_bytes(session, study_id)
        tradeoffs = charts_responsible.study_tradeoffs(session, meta)
    dash.warm(study_id)  # the charts need the trial table: load it while the page loads
    charts = charts_for(meta)
    return render(
        dash,
        request,
        "study.html",
        user,
        page="study",
        study=summary,
        meta=meta,
        charts=charts,
        first_chart=first_chart(dash, study_id, charts),
        states=STATES,
        optimizers=_optimizer_choices(meta),
        tradeoffs=tradeoffs,
        shown_states=SHOWN_STATES,
        stored=stored,
        export=f"{API_PREFIX}/studies/{study_id}/export",
        schedule=schedule_view.kind_of(meta),
    )


@router.get("/studies/{study_id}/schedule", response_class=HTMLResponse)
def schedule_page(
    study_id: StudyId, request: Request, dash: DashboardDep, user: PageUser
) -> Response:
    """A PBT study's members, best schedule and lineage; a promotion-ASHA study's rungs
    and promotions (charts and tables come from the JSON API)."""
    with dash.ctx.db.session() as session:
        meta = load_meta(session, study_id)
    kind = schedule_view.require(meta)
    charts = [c for c in SCHEDULE_CHARTS.values() if c.kind == kind]
    assert meta.spec is not None and meta.spec.schedule is not None
    return render(
        dash,
        request,
        "schedule.html",
        user,
        page="schedule",
        meta=meta,
        kind=kind,
        schedule=meta.spec.schedule.model_dump(mode="json", exclude_defaults=False),
        charts=charts,
    )


@router.get("/studies/{study_id}/trials/{number}", response_class=HTMLResponse)
def trial_page(
    study_id: StudyId, number: TrialNumber, request: Request, dash: DashboardDep, user: PageUser
) -> Response:
    """One trial: settings, epochs, attempts, artifacts."""
    with dash.ctx.db.session() as session:
        meta = load_meta(session, study_id)
        view = trial_view.load(session, meta, number)
    artifacts = artifacts_view.trial_artifacts(dash.ctx, view.detail.trial_id)
    held = artifacts_view.size_text(artifacts_view.total(artifacts))
    final = view.detail.user_attrs.get("final_metrics")
    panel = charts_responsible.trial_panel(view.settings, final, view.epochs)
    return render(
        dash,
        request,
        "trial.html",
        user,
        page="trial",
        meta=meta,
        trial=view.detail,
        view=view,
        artifacts=artifacts,
        artifact_bytes=held,
        panel=panel,
    )


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request, dash: DashboardDep, user: PageUser) -> Response:
    """The workers page (rows come from the JSON API)."""
    return render(dash, request, "workers.html", user, page="workers")


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, dash: DashboardDep, user: PageUser, ids: str = Query(default="")
) -> Response:
    """Charts over several studies (``ids``: comma-separated study ids)."""
    study_ids = parse_ids(ids)
    with dash.ctx.db.session() as session:
        metas = []
        for sid in study_ids:
            try:
                metas.append(load_meta(session, sid))
            except StudyNotFound:
                continue
    query = quote(",".join(str(m.study_id) for m in metas))
    return render(dash, request, "compare.html", user, page="compare", metas=metas, ids=query)


def parse_ids(text: str, limit: int = 12) -> list[int]:
    """``"1,2,3"`` -> [1, 2, 3] (digits only, unique, at most ``limit``)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit() and int(part) not in out:
            out.append(int(part))
    return out[:limit]
