"""The dashboard's JSON API under ``/api/v1/dashboard`` (viewer role is enough).

Charts answer Plotly figure JSON built on the server. Live refresh is
incremental: ``/version`` is a few aggregate queries; a chart is refetched
only when its version changed (and then usually comes from the cache);
learning curves send only metric rows after the client's cursor.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hpo.protocol import API_PREFIX, DASHBOARD_PREFIX
from service.api.deps import ViewerDep
from service.api.errors import error_responses
from service.core.errors import NotFound
from service.dashboard import (
    charts_curves,
    overview,
    queries,
    schedule_view,
    table,
    trial_view,
    workers_view,
)
from service.dashboard.charts import (
    COMPARE_CHARTS,
    STUDY_CHARTS,
    charts_for,
    libraries_ready,
    payload,
    safe_build,
)
from service.dashboard.charts_base import ChartResult
from service.dashboard.charts_schedules import SCHEDULE_CHARTS
from service.dashboard.frame import StudyFrame, load_meta
from service.dashboard.pages import StudyId, TrialNumber, parse_ids
from service.dashboard.state import DashboardDep, DashboardState
from service.studies.status import live_fleet

router = APIRouter(
    prefix=API_PREFIX + DASHBOARD_PREFIX,
    tags=["dashboard"],
    responses=error_responses(401, 403, 404, 422),
)


#: A schedule's answers are also a 409 (naming ``schedule``) for a study without that schedule.
_SCHEDULE_ERRORS = error_responses(409)


def _json(body: str) -> Response:
    return Response(body, media_type="application/json")


@router.get("/studies")
def studies(dash: DashboardDep, _: ViewerDep) -> list[dict[str, Any]]:
    """Every study with its state, sampler, trials per state, best value and workers."""
    with dash.ctx.db.session() as session:
        return overview.studies(session, dash.ctx.settings.worker_timeout_s)


@router.get("/studies/{study_id}/version")
def version(study_id: StudyId, dash: DashboardDep, _: ViewerDep) -> dict[str, Any]:
    """What changed: trial fingerprint, metric cursor, service rows; plus the header
    (trials per state, best trial), cached under the trial and service versions, and the
    study's label (``status``: never cached, workers come and go)."""
    with dash.ctx.db.session() as session:
        frame = dash.frame(study_id, session)
        service = queries.service_version(session, study_id)
        metrics = queries.metrics_cursor(session, study_id)
        head = dash.header(session, frame.meta, frame.version, service)
        fleet = live_fleet(session, dash.ctx.settings.worker_timeout_s)
        shown = overview.label(load_meta(session, study_id), head["counts"], fleet)
    return {"trials": frame.key, "metrics": metrics, "service": service, **head, **shown}


def _chart_version(session: Session, frame: StudyFrame, name: str) -> str:
    if name == "curves":  # the curves also change with every reported epoch
        return f"{frame.key}|{queries.metrics_cursor(session, frame.meta.study_id)}"
    return frame.key


@router.get("/studies/{study_id}/charts/{name}")
def chart(study_id: StudyId, name: str, dash: DashboardDep, _: ViewerDep) -> Response:
    """One chart of the study page as ``{figure, version, message, note, ...}``.

    Studies over ``state.STALE_OK_TRIALS`` trials whose chart was slow to build get the
    previous figure while the new one is built in the background (its ``version`` tells
    the page to ask again)."""
    if name not in STUDY_CHARTS:
        raise NotFound(f"no chart {name!r}; charts: {', '.join(STUDY_CHARTS)}", "name")
    return _json(chart_answer(dash, study_id, name))


def chart_answer(dash: DashboardState, study_id: int, name: str) -> str:
    """The JSON of a study-page chart, cached per study version (``chart``'s answer; the
    start-up warming builds the first charts of recent studies with it)."""
    spec = STUDY_CHARTS[name]
    with dash.ctx.db.session() as session:
        frame = dash.frame(study_id, session)
        version = _chart_version(session, frame, name)

    def build(_previous: Any) -> tuple[str, str]:
        with dash.ctx.db.session() as session:
            current = dash.frame(study_id, session)
            built = _chart_version(session, current, name)
            result = safe_build(name, lambda: spec.build(session, current))
            return built, payload(name, built, result)

    # A big study's chart is rebuilt at once when that is fast, else in the background
    # while the previous figure is served (``DashboardState.stale_ok``).
    timing = (study_id, f"chart:{name}")
    stale_ok = dash.stale_ok(timing, len(frame.rows))
    built = dash.timed(timing, build)
    key = (study_id, "chart", name)
    return dash.answers.get(key, version, built, stale_ok=stale_ok)  # type: ignore[no-any-return]


def warm_study(dash: DashboardState, study_id: int, charts: int = 2) -> None:
    """Build what a study page asks for first: its header and its first ``charts`` charts
    (the start-up warming does it for the most recent studies)."""
    with dash.ctx.db.session() as session:
        meta = dash.frame(study_id, session).meta
        dash.header(session, meta)
    for spec in charts_for(meta)[:charts]:
        chart_answer(dash, study_id, spec.name)


@router.get("/studies/{study_id}/diagnosis")
def diagnosis(study_id: StudyId, dash: DashboardDep, _: ViewerDep) -> Response:
    """The study's diagnosis (the API's ``StudyDiagnosis``: findings per kind, proposed
    spec edits), cached under the service rows' version (trials finishing change it);
    ``pending`` while a big study's is being built."""
    with dash.ctx.db.session() as session:
        return _json(dash.diagnosis(session, load_meta(session, study_id)))


@router.get("/studies/{study_id}/curves")
def curves_delta(
    study_id: StudyId,
    dash: DashboardDep,
    _: ViewerDep,
    since: int = Query(ge=0, le=2**63 - 1),
    watch: str = Query(default="", max_length=4000),
) -> dict[str, Any]:
    """Learning-curve rows after metric id ``since``, and watched trials that have ended."""
    with dash.ctx.db.session() as session:
        frame = dash.frame(study_id, session)
        return charts_curves.delta(session, frame, since, parse_ids(watch, limit=1000))


@router.get("/studies/{study_id}/trials")
def trials(
    study_id: StudyId,
    dash: DashboardDep,
    _: ViewerDep,
    state: str | None = None,
    optimizer: str | None = Query(default=None, max_length=200),
    sort: str = "number",
    order: str = Query(default="asc", pattern="^(asc|desc)$"),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
    limit: int = Query(default=25, ge=1, le=table.MAX_LIMIT),
) -> dict[str, Any]:
    """A page of the trials table, filtered by state and optimizer, sorted on the server."""
    q = table.TableQuery(state or None, optimizer or None, sort, order == "desc", offset, limit)
    with dash.ctx.db.session() as session:
        return table.page(session, dash.frame(study_id, session), q)


@router.get("/studies/{study_id}/trials/{number}/chart")
def trial_chart(
    study_id: StudyId, number: TrialNumber, dash: DashboardDep, _: ViewerDep
) -> Response:
    """Loss and accuracy per epoch of one trial."""
    with dash.ctx.db.session() as session:
        view = trial_view.load(session, load_meta(session, study_id), number)
    libraries_ready()
    fig = trial_view.figure(view)
    message = None if fig is not None else "No epoch reported for this trial."
    return _json(payload("trial", str(len(view.epochs)), ChartResult(fig, message)))


def _schedule_answer(dash: Any, study_id: int, what: str, kind: str) -> Response:
    """A schedule answer (``what``: ``data`` or a chart's name), cached under the
    schedule's version; 404 for an unknown study, 409 naming ``schedule`` when the study
    has no schedule of ``kind``."""
    with dash.ctx.db.session() as session:
        meta = load_meta(session, study_id)
        schedule_view.require(meta, kind)
        version = schedule_view.version(session, study_id)

    def build(_previous: Any) -> tuple[str, str]:
        with dash.ctx.db.session() as session:
            built = schedule_view.version(session, study_id)
            found = schedule_view.data(session, meta, kind)
        if what == "data":
            return built, json.dumps({**found, "version": built})
        chart = SCHEDULE_CHARTS[what]
        return built, payload(what, built, safe_build(what, lambda: chart.build(found)))

    return _json(dash.answers.get((study_id, "schedule", what), version, build))


@router.get("/studies/{study_id}/schedule/pbt", responses=_SCHEDULE_ERRORS)
def schedule_pbt(study_id: StudyId, dash: DashboardDep, _: ViewerDep) -> Response:
    """A PBT study's segments (member, segment, trial, parent, start and end step, params,
    what changed, value, reported points), its exploit jumps and its best trial's lineage
    and hyperparameter schedule."""
    return _schedule_answer(dash, study_id, "data", "pbt")


@router.get("/studies/{study_id}/schedule/asha", responses=_SCHEDULE_ERRORS)
def schedule_asha(study_id: StudyId, dash: DashboardDep, _: ViewerDep) -> Response:
    """A promotion-ASHA study's rungs (reached, paused, promoted, ended) and promotions
    (trial, from rung, to rung, value), in the order the promoted trials resumed."""
    return _schedule_answer(dash, study_id, "data", "asha")


@router.get("/studies/{study_id}/schedule/charts/{name}", responses=_SCHEDULE_ERRORS)
def schedule_chart(study_id: StudyId, name: str, dash: DashboardDep, _: ViewerDep) -> Response:
    """One chart of the schedule page (as the study page's charts)."""
    spec = SCHEDULE_CHARTS.get(name)
    if spec is None:
        raise NotFound(f"no schedule chart {name!r}; charts: {', '.join(SCHEDULE_CHARTS)}", "name")
    return _schedule_answer(dash, study_id, name, spec.kind)


@router.get("/compare/{name}")
def compare(
    name: str, dash: DashboardDep, _: ViewerDep, ids: str = Query(max_length=200)
) -> Response:
    """Cross-study charts over ``ids`` (comma-separated study ids)."""
    build_chart = COMPARE_CHARTS.get(name)
    if build_chart is None:
        raise NotFound(f"no comparison chart {name!r}", "name")
    study_ids = parse_ids(ids)
    with dash.ctx.db.session() as session:
        frames = [dash.frame(sid, session) for sid in study_ids]
    key = "/".join(f.key for f in frames)

    def build(_previous: Any) -> tuple[str, str]:
        return key, payload(name, key, safe_build(name, lambda: build_chart(frames)))

    return _json(dash.answers.get(("compare", tuple(study_ids), name), key, build))


@router.get("/workers")
def workers(dash: DashboardDep, _: ViewerDep) -> list[dict[str, Any]]:
    """Each worker: devices, current trial and pack, last heartbeat, live utilisation and
    memory, a hint when its device is under-used, recent throughput, peak memory."""
    with dash.ctx.db.session() as session:
        return workers_view.workers(session, dash.ctx.settings.worker_timeout_s)
