"""Study page load with plotly.js's strict build (served) against the regular bundle.

    .venv/bin/python bench/plotly_bundle.py --trials 10000 --runs 3

The dashboard serves plotly.js's strict build (``service/dashboard/static/vendor``:
the regular bundle needs ``'unsafe-eval'`` for WebGL charts, which the dashboard's
CSP refuses). The strict build is larger; this measures what that costs a user:
time from navigation to the first drawn chart (``bench/dashboard.py``'s browser
cases: first visit with an empty browser profile, second visit, returning visit
with warm caches, returning visit to a restarted server), alternating the two
bundles over ``--runs`` rounds on the same seeded 10,000-trial study, and prints
the medians and their ratios (strict / regular).
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plotly  # noqa: E402

from bench.dashboard import CASES, browser_rounds, seed  # noqa: E402
from bench.dashboard_report import median  # noqa: E402
from service.dashboard import static  # noqa: E402

REGULAR = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
BUNDLES = {"strict (served)": static.PLOTLY_JS, "regular (plotly.py's)": REGULAR}


def serve(bundle: Path) -> None:
    """Make the in-process servers started next serve ``bundle`` as plotly.min.js."""
    static.FILES["plotly.min.js"] = (bundle, "text/javascript")
    static._digest.cache_clear()  # the URL carries the file's hash: no cross-bundle cache hits
    static._body.cache_clear()


def sizes(bundle: Path) -> str:
    raw = bundle.read_bytes()
    return f"{len(raw) / 1e6:.2f} MB, {len(gzip.compress(raw, 6)) / 1e6:.2f} MB gzipped"


def spread(values: list[float]) -> str:
    return f"{median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds per bundle")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hpo-plotly-bench-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    studies, token, _ = seed(url, tmp, args.trials)
    results: dict[str, dict[str, list[float]]] = {n: {c: [] for c in CASES} for n in BUNDLES}
    for round_ in range(args.runs):
        for name, bundle in BUNDLES.items():
            serve(bundle)
            one = browser_rounds(url, tmp, studies.single, token, 1)
            for case in CASES:
                results[name][case] += one[case]
            print(
                f"round {round_ + 1} {name}: " + ", ".join(f"{one[c][0]:.0f}" for c in CASES),
                flush=True,
            )
    strict, regular = (results[n] for n in BUNDLES)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {args.trials} trials; median of {args.runs} alternating rounds",
        "",
        *(f"- {name}: {sizes(bundle)}" for name, bundle in BUNDLES.items()),
        "",
        "| first chart drawn after navigation, ms: median (min-max) | strict | regular "
        "| strict / regular |",
        "|---|---:|---:|---:|",
    ]
    for case in CASES:
        ratio = median(strict[case]) / median(regular[case])
        cells = [case, spread(strict[case]), spread(regular[case]), f"{ratio:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
