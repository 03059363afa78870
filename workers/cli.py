"""``hpo worker``: the worker daemon's command line.

The main ``hpo`` app (service/cli.py) registers :func:`worker` as ``hpo worker``;
``python -m workers`` runs the same command on its own (for GPU boxes that only
install the ``worker`` extra). Importing this module is cheap: no torch and no
server package; the daemon is imported when the command runs.
"""

from __future__ import annotations

import typer

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _studies(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def worker(
    server: str = typer.Option(
        ..., "--server", envvar="HPO_SERVER", help="server URL, e.g. http://hpo:8000"
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="HPO_TOKEN", help="API token with the worker role"
    ),
    device: str = typer.Option(
        "auto", "--device", help="cpu, cuda, cuda:N or auto (cuda if available, else cpu)"
    ),
    gpus: str | None = typer.Option(
        None, "--gpus", help='"all" or "0,1": one worker process per GPU (device cuda/auto)'
    ),
    studies: str | None = typer.Option(
        None, "--studies", help="comma-separated study names to take work from (default: any)"
    ),
    max_trials: int | None = typer.Option(
        None, "--max-trials", min=1, help="exit 0 after this many trials (per GPU process)"
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", envvar="HPO_DATA_DIR", help="MNIST root (the folder with MNIST/raw)"
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
    name: str | None = typer.Option(
        None, "--name", help="worker name shown in the registry (default host:device:pid)"
    ),
    idle_backoff: float = typer.Option(
        10.0, "--idle-backoff", min=0.1, help="longest wait in seconds between idle lease requests"
    ),
    server_wait: float | None = typer.Option(
        None,
        "--server-wait",
        min=0.0,
        help="give up after this many seconds if the server "
        "is down at start (default: wait forever)",
    ),
) -> None:
    """Run a worker daemon: lease trials from the server, train, report, complete."""
    level = log_level.upper()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(
            f"must be one of {', '.join(LOG_LEVELS)}", param_hint="--log-level"
        )
    from workers.daemon import WorkerOptions, run_worker

    options = WorkerOptions(
        server=server,
        token=token or None,
        device=device,
        gpus=gpus,
        studies=_studies(studies),
        max_trials=max_trials,
        data_dir=data_dir or None,
        log_level=level,
        idle_backoff_s=idle_backoff,
        server_wait_s=server_wait,
        name=name,
    )
    raise typer.Exit(run_worker(options))


#: Standalone app: ``python -m workers`` (one command, so no sub-command name).
app = typer.Typer(add_completion=False, help="hpo worker daemon")
app.command()(worker)
