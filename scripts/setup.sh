#!/usr/bin/env bash
# Create .venv and install the project with every extra (idempotent).
#   scripts/setup.sh            python environment only
#   scripts/setup.sh --system   also what only the tests need, from Debian's packages:
#                               chromium (browser tests), docker-compose (compose file
#                               validation), slurm-wlm (the SLURM script on a one-node
#                               cluster), shellcheck (the sbatch script); needs root or
#                               sudo. `make demo` never asks for it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing hpo-service[server,worker,dev,integrations] (torch is large: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[server,worker,dev,integrations]'
  touch "$stamp"
fi

if [ "${1:-}" = "--system" ]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
