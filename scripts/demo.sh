#!/usr/bin/env bash
# Placeholder until the demo issue lands: start the server on SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/hpo server "$@"
