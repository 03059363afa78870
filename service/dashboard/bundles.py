"""plotly.js bundles per chart family: a page fetches only the bundle its charts need,
and only when one of them comes into view.

How a chart says which bundle it needs (one way, for every page):

- a study-page chart: ``Chart(..., bundle=STRICT)`` in ``charts.py`` (the default is
  ``CARTESIAN``); the template writes it as ``data-bundle`` on the chart's section;
- any other chart section of a template: ``data-bundle="{{ bundles.STRICT }}"``
  (``data-bundle`` absent means ``cartesian``).

``lib.js`` (``HPO.plotlyFor(family)``) loads a family's bundle the first time a chart
of that family is drawn and draws each chart with its family's Plotly. The families:

``cartesian``
    plotly.js's cartesian partial bundle (npm ``plotly.js-cartesian-dist-min``,
    1.5 MB, 0.45 MB brotli): the 2-D SVG traces listed in :data:`CARTESIAN_TRACES`.
    It has no code that needs ``'unsafe-eval'`` (its one ``Function(...)`` is the
    ``function-bind`` polyfill, used only where ``Function.prototype.bind`` is missing),
    so it runs under the dashboard's CSP, as tests/dashboard/test_browser.py
    checks in Chromium.
``strict``
    plotly.js's full strict build (npm ``plotly.js-strict-dist-min``, 5.2 MB): every
    trace, WebGL ones (parcoords, scattergl, splom, 3-D) with regl's code precompiled,
    so they too run without ``'unsafe-eval'``. Only charts that need it fetch it.

Both are vendored in ``static/vendor/`` at the plotly.js version of the Python
``plotly`` package; ``scripts/vendor_plotly.sh`` rebuilds them (see the README there).
"""

from __future__ import annotations

from service.dashboard.static import asset_url

CARTESIAN = "cartesian"
STRICT = "strict"

#: Asset name (``static.FILES``) of each family's bundle.
FILES = {CARTESIAN: "plotly-cartesian.min.js", STRICT: "plotly.min.js"}

#: The trace types of the cartesian bundle (its package README lists them).
CARTESIAN_TRACES = frozenset(
    {
        "bar",
        "box",
        "contour",
        "heatmap",
        "histogram",
        "histogram2d",
        "histogram2dcontour",
        "image",
        "pie",
        "scatter",
        "scatterternary",
        "violin",
    }
)


def draws(family: str, trace_type: str) -> bool:
    """Whether a family's bundle draws ``trace_type`` (the strict build draws all)."""
    if family == STRICT:
        return True
    return family == CARTESIAN and trace_type in CARTESIAN_TRACES


def urls() -> dict[str, str]:
    """Each family's versioned bundle URL (the pages put them in ``data-bundles``)."""
    return {family: asset_url(name) for family, name in FILES.items()}


def url(family: str) -> str:
    """One family's versioned bundle URL."""
    return asset_url(FILES[family])
