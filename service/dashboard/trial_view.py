"""One trial in detail: the API's ``TrialDetail`` plus what the trial page adds to it
(settings by name, an epochs table, a short diagnosis, the per-epoch chart with the
findings' epochs marked, the findings with their evidence, the device telemetry, and
the compression applied with the model before and after it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sqlalchemy.orm import Session

from hpo.schemas import ShownState, TrialDetail
from hpo.settings import DEFAULT_OBJECTIVE, EPOCH_METRICS
from service.dashboard import compression
from service.dashboard.charts_base import esc, fmt, layout
from service.dashboard.frame import StudyMeta
from service.studies.trials import study_trial_detail

#: Columns of the epochs table, in the trainer's order (other metrics follow, sorted).
METRIC_COLUMNS = tuple(m for m in EPOCH_METRICS if m != "epoch")
LOSSES = tuple(m for m in EPOCH_METRICS if m.endswith("_loss"))
#: Telemetry the trial page shows: key -> (label, unit); others are left out.
TELEMETRY = {
    "util_mean_pct": ("device utilisation, mean", "%"),
    "util_peak_pct": ("device utilisation, peak", "%"),
    "device_memory_peak_mb": ("device memory, peak", "MB"),
    "host_memory_peak_mb": ("host memory, peak", "MB"),
    "samples_per_s": ("samples/s", ""),
    "data_wait_share": ("waiting on data", "share"),
}
SEVERITY_COLORS = {"error": "#c5221f", "warning": "#c77700", "info": "#677084"}


@dataclass
class TrialView:
    """What the trial page shows; ``detail`` is the API's answer for the trial."""

    detail: TrialDetail
    value: float | None
    settings: dict[str, Any]
    diagnosis: str | None
    epochs: list[dict[str, Any]]
    columns: list[str]
    findings: list[dict[str, Any]]
    telemetry: list[tuple[str, str]]
    method: str | None
    compression: dict[str, Any]
    before_after: list[dict[str, Any]]
    #: (objective name, value) of each objective (multi-objective studies; else empty)
    objectives: list[tuple[str, float | None]]


def describe(
    state: str, diagnosis: str | None, fail_reason: str | None, last_epoch: int | None
) -> str | None:
    """What happened to a trial, in a few words (diverged, pruned at epoch N, ...)."""
    if diagnosis:
        return diagnosis
    if state == ShownState.PRUNED:
        return f"pruned at epoch {last_epoch}" if last_epoch else "pruned"
    return fail_reason or None


def load(session: Session, meta: StudyMeta, number: int) -> TrialView:
    """The trial ``number`` of a study (raises TrialNotFound)."""
    detail = study_trial_detail(session, meta.study_id, number, meta.name)
    epochs = [{"epoch": m.step, "value": m.value, **m.metrics} for m in detail.metrics]
    epochs.sort(key=lambda e: e["epoch"])
    seen = {k for e in epochs for k in e}
    columns = [c for c in METRIC_COLUMNS if c in seen]
    columns += sorted(seen - set(columns) - {"epoch", "value"})
    last_epoch = epochs[-1]["epoch"] if epochs else None
    settings = meta.settings(detail.params)
    applied = compression.applied(settings)
    return TrialView(
        detail=detail,
        value=detail.value if detail.value is not None else (detail.values or [None])[0],
        settings=settings,
        diagnosis=describe(detail.state, detail.diagnosis, detail.fail_reason, last_epoch),
        epochs=epochs,
        columns=columns,
        findings=[f for f in map(finding, detail.findings) if f is not None],
        telemetry=telemetry_rows(detail.telemetry),
        method=compression.method(settings) if applied else None,
        compression=applied,
        before_after=compression.before_after(detail.user_attrs.get(compression.FINAL_METRICS)),
        objectives=_objectives(meta, detail.values),
    )


def _objectives(meta: StudyMeta, values: list[float | None] | None) -> list[tuple[str, Any]]:
    """Each objective's name and the trial's value of it, when the study has several."""
    if len(meta.directions) < 2:
        return []
    names = meta.spec.objective_names if meta.spec else []
    if len(names) != len(meta.directions):
        names = [f"objective {i}" for i in range(len(meta.directions))]
    found = list(values or [])
    return [(n, found[i] if i < len(found) else None) for i, n in enumerate(names)]


def finding(raw: Any) -> dict[str, Any] | None:
    """A stored finding (``hpo.findings.Finding`` as JSON) as the page shows it: kind,
    epoch, severity, message and its evidence as formatted numbers (None if unreadable)."""
    if not isinstance(raw, dict) or not raw.get("kind"):
        return None
    evidence = raw.get("evidence") if isinstance(raw.get("evidence"), dict) else {}
    epoch = raw.get("epoch")
    severity = str(raw.get("severity"))
    severity = severity if severity in SEVERITY_COLORS else "info"
    return {
        "kind": str(raw["kind"]),
        "severity": severity,
        "epoch": epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        "message": str(raw.get("message") or ""),
        "evidence": [(str(k), "—" if v is None else fmt(v)) for k, v in evidence.items()],
    }


def telemetry_rows(raw: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, value) of the trial's device figures, in ``TELEMETRY`` order."""
    rows = []
    for key, (label, unit) in TELEMETRY.items():
        value = (raw or {}).get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if unit == "share":
            rows.append((label, f"{100 * value:.1f} %"))
        elif unit:
            rows.append((label, f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"))
        else:
            rows.append((label, f"{value:,.0f}"))
    return rows


def figure(view: TrialView) -> go.Figure | None:
    """Loss and the default objective per epoch of one trial (None before the first report)."""
    if not view.epochs:
        return None
    epochs = [e["epoch"] for e in view.epochs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss", "accuracy"])
    for key, col in [*((loss, 1) for loss in LOSSES), (DEFAULT_OBJECTIVE, 2)]:
        if any(e.get(key) is not None for e in view.epochs):
            ys = [e.get(key) for e in view.epochs]
            fig.add_trace(go.Scatter(x=epochs, y=ys, mode="lines+markers", name=key), 1, col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    _mark_findings(fig, view.findings, set(epochs))
    return layout(fig, f"Trial {view.detail.number}: per-epoch metrics")


def _mark_findings(fig: go.Figure, findings: list[dict[str, Any]], epochs: set[int]) -> None:
    """A dotted line at the epoch each finding started, labelled with its kind."""
    for f in findings:
        if f["epoch"] not in epochs:
            continue
        color = SEVERITY_COLORS.get(f["severity"], SEVERITY_COLORS["info"])
        fig.add_vline(
            x=f["epoch"],
            line={"dash": "dot", "color": color, "width": 1.5},
            annotation_text=esc(f["kind"].replace("_", " ")),
            annotation_position="top left",
            annotation_font={"color": color, "size": 11},
        )
