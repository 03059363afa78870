"""The dashboard's per-app state (its cache, templates) and the dependencies that reach it."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from hpo.protocol import API_PREFIX, DASHBOARD_PREFIX
from service.core.context import AppContext
from service.dashboard import bundles, overview, queries
from service.dashboard.cache import VersionedCache
from service.dashboard.charts_base import fmt
from service.dashboard.frame import StudyFrame, StudyMeta, load_frame
from service.dashboard.static import asset_url, precompress

HERE = Path(__file__).parent
log = logging.getLogger("hpo.dashboard")
#: Study frames kept (least recently used go first): a 10,000-trial frame is tens of MB.
MAX_FRAMES = 32
#: Serialised answers kept (chart figures, study headers): up to a few MB each.
MAX_ANSWERS = 512
#: Studies with more trials than this get their charts and header stale-while-revalidate.
STALE_OK_TRIALS = 2000
T = TypeVar("T")
#: A big study's header (trials per state, best trial) or chart that builds faster than
#: this is rebuilt at once when a trial ends (the next poll shows it), a slower one in the
#: background while the previous one is served.
FRESH_BUILD_S = 0.3
#: A big study's diagnosis is rebuilt at most once per this many times its build time
#: (``service.studies.proposals`` takes seconds at 10,000 trials; a live study changes
#: every second).
DIAGNOSIS_SPACING = 20.0


class DashboardState:
    """What every dashboard request of one app shares.

    Two instances of the one cache abstraction, both keyed by study and labelled
    with a version: ``frames`` (each study's trial table, refreshed
    incrementally) and ``answers`` (JSON of charts and study headers, served
    stale-while-revalidate for big studies).
    """

    def __init__(self, ctx: AppContext, poll_interval_s: float = 3.0) -> None:
        self.ctx = ctx
        self.frames: VersionedCache[StudyFrame] = VersionedCache(MAX_FRAMES, "frames")
        self.answers: VersionedCache[Any] = VersionedCache(MAX_ANSWERS, "answers")
        self.poll_interval_s = poll_interval_s
        #: seconds each (study id, answer) took to build, the last time
        self.build_s: dict[tuple[int, str], float] = {}
        #: set when the start-up warming (``prewarm``) is done: (seconds it took)
        self.warmed = threading.Event()
        self.warm_s: float | None = None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.autoescape = True  # every {{ value }} is HTML-escaped
        self.templates.env.filters["fmt"] = fmt
        self.templates.env.globals.update(
            asset=asset_url,
            bundles=bundles,
            prefix=DASHBOARD_PREFIX,
            api=API_PREFIX + DASHBOARD_PREFIX,
            poll_ms=int(poll_interval_s * 1000),
        )

    def frame(self, study_id: int, session: Session | None = None) -> StudyFrame:
        """The study's current frame (raises StudyNotFound)."""
        if session is None:
            with self.ctx.db.session() as own:
                return self.frame(study_id, own)
        version = queries.trials_version(session, study_id)

        def build(old: StudyFrame | None) -> tuple[tuple[Any, ...], StudyFrame]:
            return version, load_frame(session, study_id, old, version)

        return self.frames.get((study_id,), version, build)

    def header(
        self,
        session: Session,
        meta: StudyMeta,
        trials: tuple[Any, ...] | None = None,
        service: str | None = None,
    ) -> dict[str, Any]:
        """:func:`overview.header` (trials per state, best trial), cached under the
        study's trial and service versions (pass them when already known)."""
        trials = trials or queries.trials_version(session, meta.study_id)
        service = service or queries.service_version(session, meta.study_id)
        version = "-".join(str(v) for v in trials) + f"|{service}"

        def build(_previous: Any) -> tuple[str, dict[str, Any]]:
            with self.ctx.db.session() as own:  # not the caller's: may run in the background
                return version, overview.header(own, meta)

        key = (meta.study_id, "header")
        stale_ok = self.stale_ok(key, int(trials[0]))
        return self.answers.get(key, version, self.timed(key, build), stale_ok=stale_ok)  # type: ignore[no-any-return]

    def diagnosis(self, session: Session, meta: StudyMeta) -> str:
        """:func:`overview.diagnosis` as JSON (with its ``version``), cached under the
        study's service version. For big studies it is built in the background (the first
        answer says ``pending``) and rebuilt at most once per ``DIAGNOSIS_SPACING`` times
        its build time, meanwhile answered as it was."""
        version = queries.service_version(session, meta.study_id)
        key = (meta.study_id, "diagnosis")

        def build(_previous: Any) -> tuple[str, tuple[str, float, float]]:
            started = time.monotonic()
            with self.ctx.db.session() as own:  # not the caller's: may run in the background
                body = overview.diagnosis(own, meta) | {"version": version, "pending": False}
            return version, (json.dumps(body), started, time.monotonic() - started)

        big = int(version.split(":")[0]) > STALE_OK_TRIALS
        cached = self.answers.peek(key)
        if big and cached is None:  # answer at once; the build follows in the background
            pending = {
                "study": meta.name,
                "trials": int(version.split(":")[0]),
                "findings": {},
                "proposals": [],
                "external": False,
                "pending": True,
                "version": "pending",
            }
            self.answers.get(key, "pending", lambda _: ("pending", (json.dumps(pending), 0, 0)))
        elif big and time.monotonic() - cached[1] < DIAGNOSIS_SPACING * cached[2]:
            return cached[0]  # type: ignore[no-any-return]
        return self.answers.get(key, version, build, stale_ok=big)[0]  # type: ignore[no-any-return]

    def stale_ok(self, key: tuple[int, str], trials: int) -> bool:
        """Whether ``key`` may be answered stale while rebuilt: a big study's answer that
        was slow to build the last time (or never built)."""
        return trials > STALE_OK_TRIALS and self.build_s.get(key, math.inf) > FRESH_BUILD_S

    def timed(self, key: tuple[int, str], build: Callable[[Any], T]) -> Callable[[Any], T]:
        """``build``, recording how long it takes (for :meth:`stale_ok`)."""

        def run(previous: Any) -> T:
            started = time.monotonic()
            try:
                return build(previous)
            finally:
                self.build_s[key] = time.monotonic() - started

        return run

    def forget(self, study_id: int) -> None:
        """Drop everything cached about a study."""
        for key in [k for k in self.build_s if k[0] == study_id]:
            self.build_s.pop(key, None)
        self.frames.forget(study_id)
        self.answers.forget(study_id)

    def warm(self, study_id: int) -> None:
        """Load a study's frame in the background (the page's charts will need it)."""

        def run() -> None:
            try:
                self.frame(study_id)
            except Exception:  # best effort: the chart requests report errors
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
    except Exception:  # best effort
        log.debug("prewarming the chart libraries failed", exc_info=True)


def prewarm(
    dash: DashboardState, studies: int = 4, warm: Callable[[int], None] | None = None
) -> None:
    """In the background: warm the libraries, compress the static files a study page
    needs first, load the trial tables of the most recent studies, then build what their
    pages ask for first (``warm(study_id)``: header, first charts), so that the first
    page view after a start does not wait for them. ``dash.warmed`` is set when done."""

    def run() -> None:
        started = time.monotonic()
        _prewarm_libraries()
        precompress()
        try:
            with dash.ctx.db.session() as session:
                recent = [row.study_id for row in queries.optuna_studies(session)][-studies:]
            for study_id in reversed(recent):
                dash.frame(study_id)
            for study_id in reversed(recent):
                if warm is not None:
                    warm(study_id)
        except Exception:  # best effort
            log.debug("prewarming the recent studies failed", exc_info=True)
        finally:
            dash.warm_s = time.monotonic() - started
            dash.warmed.set()
            log.info("dashboard warming done in %.1f s", dash.warm_s)

    threading.Thread(target=run, name="dashboard-prewarm", daemon=True).start()


def get_dashboard(request: Request) -> DashboardState:
    """The app's DashboardState (a FastAPI dependency)."""
    return request.app.state.dashboard  # type: ignore[no-any-return]


DashboardDep = Annotated[DashboardState, Depends(get_dashboard)]
