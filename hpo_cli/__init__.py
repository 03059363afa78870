"""The ``hpo`` command: the one entry point that puts the three parts together.

* ``hpo server``, ``hpo db upgrade``, ``hpo token create``: :mod:`service.cli`
  (they need the server extra and say so when it is missing);
* ``hpo study ...``: :mod:`hpo.cli.study`, built on :class:`hpo.Client` (base install);
* ``hpo worker``: :mod:`workers.cli` (the worker extra).

This is the composition root, outside the contract package: ``service`` and
``workers`` never import each other, and ``hpo`` (``import hpo``, ``hpo.client``,
``hpo.cli.study``) imports neither. Every module registered here is cheap to
import (the heavy imports happen inside the commands).
"""

from __future__ import annotations

import sys

import typer

import service.cli
from hpo.cli.study import study_app
from workers.cli import worker

app = typer.Typer(
    name="hpo",
    help="hpo-service: hyperparameter optimization with Optuna studies and GPU workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("server")(service.cli.server)
app.add_typer(service.cli.db_app, name="db")
app.add_typer(service.cli.token_app, name="token")
app.add_typer(study_app, name="study")
app.command("worker")(worker)


def main() -> None:
    """Entry point of the ``hpo`` script."""
    try:
        app(prog_name="hpo")
    except KeyboardInterrupt:
        sys.exit(130)
