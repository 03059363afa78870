"""``hpo study ...``: manage studies on a running server, built on :class:`hpo.Client`.

Commands: ``create FILE.yaml``, ``list``, ``show``, ``trials``, ``pause``,
``resume``, ``stop``, ``delete [--force]``, ``export --format csv|json
[--output]``, ``diagnose`` (findings and proposed spec edits), ``best-model -o DIR``
(the best trial's model, or the Pareto trials'), ``gc`` (apply the study's artifact
retention now) and ``schema`` (the spec's JSON Schema). Listing commands take
``--format table|json``. The server is
``--server`` (env ``HPO_SERVER``, default http://127.0.0.1:8000); the token is
``--token`` (env ``HPO_TOKEN``), else the ``admin`` entry of the bootstrap token
file (env ``HPO_TOKEN_FILE``, default ``hpo-tokens.json`` in the working
directory).

Errors are one line on stderr, never a traceback. Exit codes: 0 success,
1 the server refused or could not be reached, 2 bad input (unreadable file,
YAML or spec error, found before any network call).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hpo.cli import views
from hpo.client import DEFAULT_SERVER, Client
from hpo.spec import spec_json_schema
from hpo.specfile import SpecFileError, load_spec_file
from hpo.transport import ApiError, ClientError, RetryPolicies, ServerUnavailable

DEFAULT_TOKEN_FILE = "hpo-tokens.json"

study_app = typer.Typer(help="Studies on a running server.", no_args_is_help=True)

P = ParamSpec("P")
R = TypeVar("R")

Server = Annotated[
    str, typer.Option("--server", envvar="HPO_SERVER", help="server URL (env HPO_SERVER)")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="HPO_TOKEN",
        show_default=False,
        help="API token (env HPO_TOKEN; default: the admin token in HPO_TOKEN_FILE)",
    ),
]
StudyRef = Annotated[str, typer.Argument(help="study name or id")]


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class ListFormat(StrEnum):
    table = "table"
    json = "json"


Format = Annotated[ListFormat, typer.Option("--format", "-f", help="table or json")]
TABLE = ListFormat.table


class CliError(Exception):
    """A failure reported as one line, with the process exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _clean_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every expected failure into ``error: ...`` plus an exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            fail(exc.message, exc.code)
        except SpecFileError as exc:
            fail(str(exc), 2)
        except ApiError as exc:
            fail(f"{exc.status_code} {exc.detail}", 1)
        except ServerUnavailable as exc:
            fail(f"cannot reach server at {exc.server}", 1)
        except ClientError as exc:
            fail(f"request failed: {exc}", 1)
        except OSError as exc:
            fail(f"{exc.filename or 'file'}: {exc.strerror or exc}", 2)

    return wrapper


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    Console(stderr=True).print(
        f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


# --------------------------------------------------------------------------- client


def read_token_file(path: Path | None = None) -> str | None:
    """The ``admin`` token of the bootstrap token file, or None when there is no file."""
    path = path or Path(os.environ.get("HPO_TOKEN_FILE") or DEFAULT_TOKEN_FILE)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CliError(f"{path}: not a JSON token file ({exc})", 2) from exc
    token = data.get("admin") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise CliError(f"{path}: has no 'admin' token", 2)
    return token


def client(server: str, token: str | None) -> Client:
    """A client for ``server`` that gives up within seconds (a person is waiting)."""
    return Client(server, token or read_token_file() or "", policies=RetryPolicies.interactive())


# --------------------------------------------------------------------------- commands


@study_app.command("create")
@_clean_errors
def create(
    file: Annotated[Path | None, typer.Argument(help="study spec (YAML)")] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--file", "-f", help="study spec (YAML), instead of FILE")
    ] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Create a study from a YAML spec (validated locally first): FILE or -f FILE."""
    path = spec_file if file is None else file
    if path is None or (file is not None and spec_file is not None):
        raise typer.BadParameter("give the study spec once: hpo study create -f FILE (or FILE)")
    spec = load_spec_file(path)
    with client(server, token) as api:
        study = api.create_study(spec)
    Console().print(f"created study {study.name!r} (id {study.study_id})", markup=False)


def _emit(answer: Any, fmt: ListFormat, table: Callable[[Any], None]) -> None:
    """``--format json``: the answer as JSON on stdout; else ``table(answer)``."""
    if fmt == ListFormat.table:
        table(answer)
    elif isinstance(answer, list):
        typer.echo(json.dumps([item.model_dump(mode="json") for item in answer], indent=2))
    else:
        typer.echo(answer.model_dump_json(indent=2))


@study_app.command("list")
@_clean_errors
def list_studies(
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    fmt: Format = ListFormat.table,
) -> None:
    """List studies with their trial counts."""
    with client(server, token) as api:
        _emit(api.list_studies(limit=limit, offset=offset), fmt, views.print_study_page)


def _register(name: str, doc: str, command: Callable[..., None]) -> None:
    """Add ``command`` to ``hpo study`` as ``name``, with ``doc`` as its help."""
    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    study_app.command(name)(_clean_errors(command))


def _view_command(name: str, method: str, table: Callable[[Any], None], doc: str) -> None:
    """Register ``hpo study NAME REF [--format table|json]``: the answer of
    :class:`Client`'s method ``method`` for the study, printed by ``table`` or as JSON."""

    def command(
        ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None, fmt: Format = TABLE
    ) -> None:
        with client(server, token) as api:
            _emit(getattr(api, method)(ref), fmt, table)

    _register(name, doc, command)


_view_command(
    "show",
    "get_study",
    views.print_summary,
    "Show a study: state, counts and best trial (or Pareto front).",
)


@study_app.command("trials")
@_clean_errors
def trials(
    ref: StudyRef,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    state: Annotated[str | None, typer.Option(help="only trials in this state")] = None,
    fmt: Format = ListFormat.table,
) -> None:
    """List every trial of a study (number, state, value, params)."""
    with client(server, token) as api:
        items = list(api.trials(ref, state=state))
    _emit(items, fmt, lambda rows: views.print_trials(ref, rows))


_view_command(
    "diagnose",
    "diagnosis",
    views.print_diagnosis,
    "What went wrong in the study's trials, and the spec edits that would avoid it.",
)


def _change(ref: str, action: str, server: str, token: str | None) -> None:
    with client(server, token) as api:
        study = getattr(api, action)(ref)
    Console().print(f"study {study.name!r}: {study.state}", markup=False)


def _state_command(action: str, doc: str) -> None:
    """Register ``hpo study ACTION REF``: one call of :class:`Client`'s method ``action``."""

    def command(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
        _change(ref, action, server, token)

    _register(action, doc, command)


_state_command("pause", "Pause a study: no new trials until it is resumed.")
_state_command("resume", "Resume a paused study.")
_state_command("stop", "Stop a study for good (it cannot be resumed).")


@study_app.command("delete")
@_clean_errors
def delete(
    ref: StudyRef,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    force: Annotated[bool, typer.Option("--force", help="delete even with active leases")] = False,
) -> None:
    """Delete a study and all its trials (Optuna's records included)."""
    with client(server, token) as api:
        api.delete_study(ref, force=force)
    Console().print(f"deleted study {ref!r}", markup=False)


@study_app.command("export")
@_clean_errors
def export(
    ref: StudyRef,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="csv or json")] = (
        ExportFormat.csv
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Export every trial of a study as CSV or JSON."""
    with client(server, token) as api:
        if output is None:
            api.export(ref, lambda b: typer.echo(b, nl=False), fmt.value)
            return
        sink = _LazyFile(output)
        try:
            size = api.export(ref, sink.write, fmt.value)
        finally:
            sink.close()
    Console(stderr=True).print(f"wrote {output} ({size} bytes)", markup=False)


@study_app.command("best-model")
@_clean_errors
def best_model(
    ref: StudyRef,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="folder to write trial-<number>/ folders into")
    ],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Download the final model of the best trial (every Pareto trial with several
    objectives) into DIR/trial-<number>/."""
    with client(server, token) as api:
        written = api.best_models(ref, output)
    if not written:
        raise CliError(
            f"study {ref!r} has no model artifact yet: no best trial (or Pareto trial) "
            "has uploaded its model",
            1,
        )
    console = Console()
    for path in written:
        size = views.human_bytes(path.stat().st_size)
        console.print(f"wrote {path} ({size})", markup=False, soft_wrap=True)
    trials = len({path.parent for path in written})
    console.print(
        f"{len(written)} file{'s' * (len(written) != 1)} from "
        f"{trials} trial{'s' * (trials != 1)} of study {ref!r}",
        markup=False,
    )


@study_app.command("gc")
@_clean_errors
def gc(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Apply the study's artifact retention now (admin): finished trials lose their
    checkpoints, except the best trials' final one."""
    with client(server, token) as api:
        report = api.gc(ref)
    deleted, freed, kept = report["deleted"], report["freed_bytes"], report["kept_trials"]
    best = "the best trial" if kept == 1 else f"the {kept} best trials"
    Console().print(
        f"study {report['study']!r}: deleted {deleted} checkpoint{'s' * (deleted != 1)}, "
        f"freed {views.human_bytes(freed, exact=True)}"
        + (f"; kept the final checkpoint of {best}" if kept else ""),
        markup=False,
    )


@study_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a study spec (also served at /api/v1/spec-schema)."""
    typer.echo(json.dumps(spec_json_schema(), indent=2, sort_keys=True))


class _LazyFile:
    """Opens the output file on the first byte, so a refused export leaves no file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def write(self, chunk: bytes) -> None:
        if self._fh is None:
            self._fh = self.path.open("wb")
        self._fh.write(chunk)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
