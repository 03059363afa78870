#!/usr/bin/env bash
# The demo: server + workers + studies/quick.yaml on embedded SQLite (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export HPO_DATA_DIR="${HPO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
exec .venv/bin/python scripts/demo.py --data-dir "$HPO_DATA_DIR" "$@"
