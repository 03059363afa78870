"""The server's commands of ``hpo``: ``server``, ``db upgrade`` and ``token create``.

:mod:`hpo_cli` puts them together with ``hpo study`` and ``hpo worker``;
``python -m service.cli`` runs these alone. Server-side imports (fastapi,
sqlalchemy, optuna) happen inside the commands, so importing this module is
cheap and ``hpo worker`` runs on a box with only the worker extra installed;
without the server extra these commands say which extra to install.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import logging.config
import os
import stat
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    name="hpo",
    help="hpo-service: hyperparameter optimization with Optuna studies and GPU workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line
    raise typer.Exit(code)


#: What the server's commands import; all come with ``pip install 'hpo-service[server]'``.
SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "optuna", "pydantic_settings")


def require_server_extra() -> None:
    """Exit with a clear message when the server extra is not installed."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        _fail(
            f"this command needs the server extra (missing: {', '.join(missing)}): "
            "pip install 'hpo-service[server]'"
        )


def _settings(**overrides: Any) -> Any:
    require_server_extra()
    from pydantic import ValidationError

    from service.core.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a cross-field check: its message names the fields
            _fail(f"bad settings: {err['msg'].removeprefix('Value error, ')}")
        _fail(f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}")


DbUrl = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (env HPO_DATABASE_URL)")
]


@db_app.command("upgrade")
def db_upgrade(database_url: DbUrl = None) -> None:
    """Create or upgrade the service's tables (Optuna's are created on first use)."""
    from service.core import migrate

    settings = _settings(database_url=database_url)
    migrate.upgrade(settings.database_url)
    console.print(f"schema at revision {migrate.head_revision(settings.database_url)}")


def _write_token_file(path: Path, tokens: dict[str, str]) -> None:
    """Write bootstrap tokens readable by the owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        json.dump(tokens, fh, indent=2)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def bootstrap_tokens(settings: Any) -> dict[str, str] | None:
    """On first start (no tokens yet) mint an admin and a worker token into the token file."""
    from service.core.auth import count_tokens, create_token_without_commit
    from service.core.db import Database

    db = Database(settings)
    try:
        with db.session() as session:
            if count_tokens(session) > 0:
                return None
            tokens = {
                role: create_token_without_commit(session, role, f"bootstrap-{role}")[0]
                for role in ("admin", "worker")
            }
            _write_token_file(settings.token_file, tokens)
    finally:
        db.dispose()
    return tokens


def _check_exposure(settings: Any) -> None:
    if not settings.auth and not settings.host_is_loopback():
        _fail(
            f"refusing to bind {settings.host} without authentication: "
            "enable auth (HPO_AUTH=true) or bind 127.0.0.1"
        )


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="bind address (env HPO_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (env HPO_PORT)")] = None,
    database_url: DbUrl = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes")] = None,
    auth: Annotated[bool | None, typer.Option("--auth/--no-auth", help="require tokens")] = None,
    migrate: Annotated[
        bool | None, typer.Option("--migrate/--no-migrate", help="upgrade the schema on start")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    log_format: Annotated[
        str, typer.Option(help="text, or json: one JSON object per line for log collectors")
    ] = "text",
) -> None:
    """Run the API server and dashboard."""
    import uvicorn

    from service.core.logs import LOG_FORMATS, logging_config

    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        workers=workers,
        auth=auth,
        auto_migrate=migrate,
    )
    _check_exposure(settings)
    if log_format not in LOG_FORMATS:
        _fail(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    log_config = logging_config(log_level, log_format)
    logging.config.dictConfig(log_config)
    _prepare_schema(settings)
    if settings.auth:
        minted = bootstrap_tokens(settings)
        if minted:
            console.print(
                f"first start: wrote an admin and a worker token to {settings.token_file} "
                "(mode 0600). Pass them with --token or HPO_TOKEN."
            )
    # Worker processes rebuild Settings from the environment: export the overrides.
    for key, value in settings.model_dump(mode="json").items():
        os.environ[f"HPO_{key.upper()}"] = str(value)
    if settings.workers > 1:
        multiprocess_metrics_dir()
    uvicorn.run(
        "service.cli:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
        log_config=log_config,
        timeout_graceful_shutdown=10,
    )


def multiprocess_metrics_dir() -> str:
    """Prometheus multiprocess mode for several server processes: every process writes its
    counters to files in one folder, and ``/metrics`` sums them, whichever process answers.

    ``PROMETHEUS_MULTIPROC_DIR`` is used when set (emptied: stale files of a previous run
    would be added in), else a fresh temporary folder. Set before uvicorn starts the
    processes, which import prometheus_client after it.
    """
    import shutil
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="hpo-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _prepare_schema(settings: Any) -> None:
    from service.core import migrate
    from service.core.db import Database

    if settings.auto_migrate:
        migrate.upgrade(settings.database_url)
        return
    db = Database(settings)
    try:
        if not migrate.is_up_to_date(db.engine):
            _fail("the database schema is not up to date; run `hpo db upgrade` first")
    finally:
        db.dispose()


def app_factory() -> Any:
    """Uvicorn factory: settings come from the HPO_* environment."""
    from service.app import create_app
    from service.core.config import Settings

    settings = Settings()
    # The parent already migrated; replicas must not race on the schema.
    return create_app(settings.model_copy(update={"auto_migrate": False}))


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin, worker or viewer")],
    name: Annotated[str, typer.Option(help="a label for the token")] = "",
    database_url: DbUrl = None,
) -> None:
    """Mint a token directly in the database and print it (shown once)."""
    from service.core import migrate
    from service.core.auth import ROLES, create_token_without_commit
    from service.core.db import Database

    if role not in ROLES:
        _fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    settings = _settings(database_url=database_url)
    migrate.upgrade(settings.database_url)
    db = Database(settings)
    try:
        with db.session() as session:
            raw, token_id = create_token_without_commit(session, role, name or role)
    finally:
        db.dispose()
    console.print(f"token {token_id} ({role}) created; it is shown only once:")
    typer.echo(raw)


def main() -> None:
    """``python -m service.cli``: the server's commands alone."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
