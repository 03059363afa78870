"""The chart registry: each chart of the study page is a name, a title and a
builder over the study's :class:`StudyFrame`; answers are cached per study and
version (``cache.py``)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from service.dashboard import (
    bundles,
    charts_compare,
    charts_curves,
    charts_params,
    charts_pareto,
    charts_space,
)
from service.dashboard.charts_base import ChartResult
from service.dashboard.compression import is_compression_study
from service.dashboard.frame import StudyFrame, StudyMeta

log = logging.getLogger("hpo.dashboard")


def _always(_meta: StudyMeta) -> bool:
    return True


def _multi_objective(meta: StudyMeta) -> bool:
    return len(meta.directions) > 1


def _pareto_bundle(meta: StudyMeta) -> str:
    """Three objectives draw a 3-D front (WebGL: the strict build), two a 2-D one."""
    return bundles.STRICT if len(meta.directions) > 2 else bundles.CARTESIAN


@dataclass(frozen=True)
class Chart:
    """A chart of the study page: ``build(session, frame)`` draws it; the page shows it
    for the studies it ``applies`` to (the API answers it for any study). ``bundle`` is
    the plotly.js family its traces need (``bundles.py``), or a function of the study
    that names it: the page fetches that bundle only when the chart comes into view."""

    name: str
    title: str
    build: Callable[[Session, StudyFrame], ChartResult]
    wide: bool = False
    applies: Callable[[StudyMeta], bool] = _always
    bundle: str | Callable[[StudyMeta], str] = bundles.CARTESIAN

    def family(self, meta: StudyMeta) -> str:
        """The plotly.js bundle family this chart needs for ``meta``'s study."""
        return self.bundle(meta) if callable(self.bundle) else self.bundle


def _frame_only(fn: Callable[[StudyFrame], ChartResult]) -> Callable[..., ChartResult]:
    return lambda _session, frame: fn(frame)


STUDY_CHARTS: dict[str, Chart] = {
    c.name: c
    for c in [
        Chart(
            "pareto",
            "Pareto front",
            _frame_only(charts_pareto.pareto),
            True,
            _multi_objective,
            bundle=_pareto_bundle,
        ),
        Chart("size", "Accuracy against size", charts_pareto.size, True, is_compression_study),
        Chart("optimizers", "Optimizer comparison", _frame_only(charts_params.optimizers)),
        Chart("lr", "Learning rate vs objective", _frame_only(charts_params.learning_rate)),
        Chart("curves", "Learning curves", charts_curves.curves, True),
        Chart("regularization", "Regularization", _frame_only(charts_params.regularization), True),
        Chart("batch_norm", "Batch norm", _frame_only(charts_params.batch_norm)),
        Chart("history", "Optimization history", _frame_only(charts_space.history)),
        Chart("importance", "Parameter importance", _frame_only(charts_space.importance)),
        Chart("contour", "Contour", _frame_only(charts_space.contour)),
        Chart(
            "parallel",
            "Parallel coordinates",
            _frame_only(charts_space.parallel),
            True,
            bundle=bundles.STRICT,  # parcoords is WebGL
        ),
        Chart("slice", "Slice plots", _frame_only(charts_space.slices), True),
    ]
}


def charts_for(meta: StudyMeta) -> list[Chart]:
    """The charts the study page shows for a study (compression charts for compression
    studies only, first: they are the point of those studies)."""
    return [c for c in STUDY_CHARTS.values() if c.applies(meta)]


COMPARE_CHARTS: dict[str, Callable[[list[StudyFrame]], ChartResult]] = {
    "histories": charts_compare.histories,
    "distributions": charts_compare.distributions,
}


def payload(name: str, version: str, result: ChartResult) -> str:
    """The JSON answer of a chart request (the figure is Plotly's own serialisation)."""
    meta: dict[str, Any] = {
        "chart": name,
        "version": version,
        "message": result.message,
        "note": result.note,
    }
    meta.update(result.extra or {})
    figure = result.figure.to_json() if result.figure is not None else "null"
    return '{"figure":' + figure + "," + json.dumps(meta)[1:]


def libraries_ready() -> None:
    """Block while another thread imports pandas (parameter importance does, lazily):
    Plotly's validators look pandas up in ``sys.modules`` and fail on a half-imported
    module, so a chart built meanwhile (at start-up, beside the prewarm) would break."""
    with contextlib.suppress(ImportError):  # not installed: nothing to wait for
        import pandas  # noqa: F401


def safe_build(name: str, build: Callable[[], ChartResult]) -> ChartResult:
    """A failing chart shows a message instead of breaking the page."""
    libraries_ready()
    try:
        return build()
    except Exception:  # one chart must not take the page down
        log.exception("dashboard chart %s failed", name)
        return ChartResult(message="This chart could not be drawn (the server log has details).")
