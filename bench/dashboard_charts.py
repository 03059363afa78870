"""Chart paths measured: Optuna's plot functions vs the dashboard's charts drawn from the frame.

The dashboard used to draw history, parallel coordinates, contour and slice
with ``optuna.visualization`` below a trial count and from its trial frame
above it. This measures both paths on the same synthetic study (SQLite, bulk
inserted) at each size: ``ov.plot_*(study)`` over the frame's ``FrozenTrial``
objects (already built, as the old cache kept them) + ``to_json()``, against
the dashboard's chart function + ``to_json()``. The Pareto front is measured on a
multi-objective compression study (``bench/synthetic/compression.py``) against
``ov.plot_pareto_front``; accuracy against size has no Optuna counterpart (drawn
from the frame plus the trials' final metrics). Used by ``bench/dashboard.py``
(``--chart-sizes``); also runnable alone:

    .venv/bin/python bench/dashboard_charts.py 200 10000
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna.visualization as ov  # noqa: E402

from bench.synthetic import compression, demo, seeding  # noqa: E402
from service.core.config import Settings  # noqa: E402
from service.dashboard import charts_pareto, charts_space  # noqa: E402
from service.dashboard.charts import libraries_ready  # noqa: E402
from service.dashboard.frame import StudyFrame  # noqa: E402
from service.dashboard.frame_study import frame_study  # noqa: E402

Draw = Callable[[], Any]


def _paths(frame: StudyFrame) -> dict[str, tuple[Draw, Draw]]:
    """chart -> (Optuna's plot function, the dashboard's chart), over the same trials."""
    every = frame_study(frame)  # as the dashboard called them: history over every trial
    study = frame_study(frame, ("COMPLETE",))
    axes = list(charts_space.contour_axes(frame) or ())
    return {
        "history": (
            lambda: ov.plot_optimization_history(every),
            lambda: charts_space.history(frame).figure,
        ),
        "parallel": (
            lambda: ov.plot_parallel_coordinate(study),
            lambda: charts_space.parallel(frame).figure,
        ),
        "contour": (
            lambda: ov.plot_contour(study, params=axes),
            lambda: charts_space.contour(frame).figure,
        ),
        "slice": (lambda: ov.plot_slice(study), lambda: charts_space.slices(frame).figure),
    }


def _compression_paths(app: Any, trials: int) -> dict[str, tuple[Draw | None, Draw]]:
    """The Pareto front (Optuna's ``plot_pareto_front`` and the frame's) and accuracy
    against size (the frame's only) on a compression study of ``trials`` trials."""
    ctx = app.state.ctx
    spec = compression.compression_spec("paths-compression")
    sid = seeding.seed_bulk(ctx, spec, trials, seed=1, simulate=compression.simulate)
    frame = app.state.dashboard.frame(sid)
    study = frame_study(frame, ("COMPLETE",))

    def size() -> Any:
        frame.memo("shipped").clear()  # read the final metrics again, as a fresh frame does
        with ctx.db.session() as session:
            return charts_pareto.size(session, frame).figure

    return {
        "pareto": (lambda: ov.plot_pareto_front(study), lambda: charts_pareto.pareto(frame).figure),
        "size": (None, size),
    }


def _time(draw: Draw, repeats: int) -> tuple[float, float]:
    """(median ms of draw + to_json, JSON MB)."""
    times, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        size = len(draw().to_json())
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size / 1e6


def measure_size(trials: int) -> dict[str, dict[str, float | None]]:
    """Both paths of each chart on fresh studies of ``trials`` trials."""
    from service.app import create_app

    tmp = Path(tempfile.mkdtemp(prefix="hpo-chart-paths-"))
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'paths.db'}",
        auth=False,
        token_file=tmp / "tokens.json",
        reaper_interval_s=3600.0,
    )
    app = create_app(settings)
    try:
        sid = seeding.seed_bulk(app.state.ctx, demo.demo_spec("paths"), trials, seed=1)
        paths: dict[str, tuple[Draw | None, Draw]] = dict(_paths(app.state.dashboard.frame(sid)))
        paths |= _compression_paths(app, trials)
        libraries_ready()  # the app's prewarm may be importing pandas in the background
        repeats = 1 if trials > 2000 else 3
        out: dict[str, dict[str, float | None]] = {}
        for chart, (optuna_path, frame_path) in paths.items():
            optuna_ms, optuna_mb = _time(optuna_path, repeats) if optuna_path else (None, None)
            frame_ms, frame_mb = _time(frame_path, 3)
            out[chart] = {
                "optuna_ms": optuna_ms,
                "optuna_mb": optuna_mb,
                "frame_ms": frame_ms,
                "frame_mb": frame_mb,
            }
            print(f"chart paths, {trials} trials, {chart}: {out[chart]}", flush=True)
        return out
    finally:
        app.state.ctx.close()


def measure(sizes: list[int]) -> dict[int, dict[str, dict[str, float | None]]]:
    return {n: measure_size(n) for n in sizes}


def table(data: dict[int, dict[str, dict[str, float | None]]]) -> list[str]:
    """Markdown rows: one per chart and size."""
    rows = [
        "| chart | trials | Optuna's plot function (ms) | its JSON (MB) "
        "| drawn from the frame (ms) | its JSON (MB) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for trials, charts in data.items():
        for chart, m in charts.items():
            optuna = (
                "— | —"
                if m["optuna_ms"] is None
                else f"{m['optuna_ms']:,.0f} | {m['optuna_mb']:.2f}"
            )
            rows.append(
                f"| {chart} | {trials:,} | {optuna} | {m['frame_ms']:,.0f} | {m['frame_mb']:.2f} |"
            )
    return rows


if __name__ == "__main__":
    print("\n".join(table(measure([int(a) for a in sys.argv[1:]] or [200, 10_000]))))
