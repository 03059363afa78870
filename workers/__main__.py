"""``python -m workers``: the worker daemon (same options as ``hpo worker``)."""

from __future__ import annotations

from workers.cli import app

if __name__ == "__main__":
    app(prog_name="python -m workers")
