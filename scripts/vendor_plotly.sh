#!/usr/bin/env bash
# Rebuild the dashboard's vendored plotly.js bundles from the npm registry:
#   service/dashboard/static/vendor/plotly-strict.min.js     (npm plotly.js-strict-dist-min)
#   service/dashboard/static/vendor/plotly-cartesian.min.js  (npm plotly.js-cartesian-dist-min)
#   service/dashboard/static/vendor/plotly-LICENSE
# Both unmodified, at one plotly.js version: by default the one the Python `plotly`
# package in .venv builds figures for (its package_data/plotly.min.js header).
#
#   scripts/vendor_plotly.sh            # that version
#   scripts/vendor_plotly.sh 4.1.1      # a given version
#
# Needs npm (and network). service/dashboard/bundles.py says which chart loads which
# bundle; tests/dashboard/test_bundles.py and test_browser.py check them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/service/dashboard/static/vendor"
version="${1:-}"
if [[ -z "$version" ]]; then
  version="$("$root/.venv/bin/python" - <<'PY'
import pathlib, re, plotly
head = (pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()[:200]
print(re.search(r"v(\d+\.\d+\.\d+)", head).group(1))
PY
)"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
for pkg in plotly.js-strict-dist-min plotly.js-cartesian-dist-min; do
  npm pack --silent "$pkg@$version" >/dev/null
  mkdir "$pkg"
  tar xzf "$pkg-$version.tgz" -C "$pkg"
done
cp plotly.js-strict-dist-min/package/plotly-strict.min.js "$vendor/"
cp plotly.js-cartesian-dist-min/package/plotly-cartesian.min.js "$vendor/"
cp plotly.js-strict-dist-min/package/LICENSE "$vendor/plotly-LICENSE"
sha256sum "$vendor"/plotly-*.min.js
echo "plotly.js $version vendored"
