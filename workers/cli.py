"""``hpo worker``: the worker daemon's command line, generated from :class:`WorkerOptions`.

Every option is declared once, in :mod:`workers.options`; this module turns
each field that has a flag into a click option (same name, help, environment
variable and bounds), validates the result with the model, and then decides
what runs: one :class:`~workers.daemon.Worker` on one device, or a
:class:`~workers.supervisor.Supervisor` with one worker process per GPU.

``python -m workers`` runs the same command (for boxes with only the worker
extra); a supervisor's children get their options from ``HPO_WORKER_OPTIONS``.
Importing this module is cheap: no torch, no daemon, no server package.
"""

from __future__ import annotations

import inspect
import logging
import os
import types
import typing
from typing import Any

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from workers.options import OPTIONS_ENV, ExitCode, WorkerOptions

log = logging.getLogger("workers.cli")


def run(options: WorkerOptions) -> int:
    """Run the daemon (one process, or a supervisor of one process per GPU group); exit code."""
    from workers.devices import DeviceError, gpu_groups, plan_gpus
    from workers.ui import setup_logging

    setup_logging(options.log_level)
    try:
        plan = plan_gpus(options.gpus, options.device)
        groups = gpu_groups(plan, options.gpus_per_trial or 1)
    except DeviceError as exc:
        log.error("%s", exc)
        return ExitCode.CONFIG
    try:
        if len(groups) > 1:
            from workers.supervisor import Supervisor

            return Supervisor(options, groups).run()
        if groups:  # one GPU (or one group) chosen with --gpus: run here, pinned to it
            os.environ["CUDA_VISIBLE_DEVICES"] = groups[0]
            options = options.model_copy(update={"device": "cuda:0", "gpus": None})
        from workers.daemon import Worker

        return Worker(options).run()
    except Exception:
        log.exception("worker crashed")
        return ExitCode.ERROR


def options_from_env() -> WorkerOptions | None:
    """The options a supervisor passed to this child process, if any."""
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return None
    options = WorkerOptions.model_validate_json(raw)
    return options.model_copy(update={"token": os.environ.get("HPO_TOKEN") or None})


# --------------------------------------------------------------------------- the command


def _cli_type(field: FieldInfo) -> Any:
    """The command-line type of a field: its base type, optional; lists are comma text."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        # One type: that type; several ("8" or "auto"): text, which the model converts.
        annotation = kinds[0] if len(kinds) == 1 else str
    if typing.get_origin(annotation) is list:
        annotation = str  # "a,b" on the command line; the model splits it
    return annotation | None


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter | None:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = extra.get("flag")
    if not flag:
        return None
    kind = _cli_type(field)
    decls = [f"{flag}/--no-{flag[2:]}"] if kind == bool | None else [flag]
    default = typer.Option(
        None,
        *decls,
        help=field.description,
        envvar=extra.get("envvar"),
        show_default=False,
    )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)


def _describe(err: Any) -> str:
    field = str(err["loc"][0]) if err["loc"] else ""
    info = WorkerOptions.model_fields.get(field)
    extra = info.json_schema_extra if info and isinstance(info.json_schema_extra, dict) else {}
    where = extra.get("flag") or field
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def worker(**given: Any) -> None:
    """Run a worker daemon: lease trials from the server, train, report, complete."""
    values = {name: value for name, value in given.items() if value is not None}
    try:
        options = WorkerOptions.model_validate(values)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(_describe(e) for e in exc.errors())) from None
    raise typer.Exit(int(run(options)))


# typer reads a command's options from its signature: give ``worker`` one parameter per
# flagged field of WorkerOptions, so the options are declared only in the model.
_params = [p for n, f in WorkerOptions.model_fields.items() if (p := _parameter(n, f))]
worker.__signature__ = inspect.Signature(_params)  # type: ignore[attr-defined]
worker.__annotations__ = {p.name: p.annotation for p in _params}

#: Standalone app: ``python -m workers`` (one command, so no sub-command name).
app = typer.Typer(add_completion=False, help="hpo worker daemon")
app.command()(worker)
