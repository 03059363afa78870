"""``python -m workers``: the worker daemon (same options as ``hpo worker``).

A child of the per-GPU supervisor gets its options from ``HPO_WORKER_OPTIONS``
instead of a command line.
"""

from __future__ import annotations

import sys

from workers.cli import app, options_from_env, run

if __name__ == "__main__":
    options = options_from_env()
    if options is not None:
        sys.exit(int(run(options)))
    app(prog_name="python -m workers")
