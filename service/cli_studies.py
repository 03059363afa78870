"""``hpo study ...``: manage studies on a running server over HTTP.

Commands: ``create FILE.yaml``, ``list``, ``show``, ``pause``, ``resume``,
``stop``, ``delete [--force]`` and ``export --format csv|json [--output]``.
The server is ``--server`` (env ``HPO_SERVER``, default http://127.0.0.1:8000);
the token is ``--token`` (env ``HPO_TOKEN``), else the ``admin`` entry of the
bootstrap token file (env ``HPO_TOKEN_FILE``, default ``hpo-tokens.json`` in
the working directory).

Errors are one line on stderr, never a traceback. Exit codes: 0 success,
1 the server refused or could not be reached, 2 bad input (unreadable file,
YAML or spec error, found before any network call).

This module needs only the base install (httpx, typer, rich, pyyaml);
specs are validated locally when the server extras (optuna) are installed.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import quote

import httpx
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workers.protocol import API_PREFIX

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_TOKEN_FILE = "hpo-tokens.json"
_SPEC_DISCRIMINATORS = {"float", "int", "categorical"}

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
            _fail(exc.message, exc.code)
        except httpx.HTTPError as exc:
            _fail(f"request failed: {exc}", 1)
        except OSError as exc:
            _fail(f"{exc.filename or 'file'}: {exc.strerror or exc}", 2)

    return wrapper


def _fail(message: str, code: int) -> NoReturn:
    Console(stderr=True).print(
        f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


# --------------------------------------------------------------------------- tokens, HTTP


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


@contextmanager
def api_client(server: str, token: str | None) -> Iterator[httpx.Client]:
    """An HTTP client for ``server``'s API, sending the token when there is one."""
    token = token or read_token_file()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = server.rstrip("/") + API_PREFIX
    with httpx.Client(base_url=base, headers=headers, timeout=30.0) as client:
        yield client


def server_message(response: httpx.Response) -> str:
    """The server's error message: ``detail`` (joined when a list), else the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    text = str(detail) if detail else response.text.strip() or response.reason_phrase
    return f"{response.status_code} {text}"


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; connection problems and 4xx/5xx answers become a CliError."""
    with _transport_errors(client):
        response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise CliError(server_message(response))
    return response


def download(
    client: httpx.Client, path: str, params: dict[str, str], write: Callable[[bytes], Any]
) -> int:
    """Stream a GET answer into ``write``; returns the number of bytes."""
    size = 0
    with _transport_errors(client), client.stream("GET", path, params=params) as response:
        if response.status_code >= 400:
            response.read()
            raise CliError(server_message(response))
        for chunk in response.iter_bytes():
            write(chunk)
            size += len(chunk)
    return size


@contextmanager
def _transport_errors(client: httpx.Client) -> Iterator[None]:
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise CliError(f"cannot reach server at {_server_of(client)}") from exc
    except httpx.TransportError as exc:
        raise CliError(f"request to {_server_of(client)} failed: {exc}") from exc


def _server_of(client: httpx.Client) -> str:
    return str(client.base_url).removesuffix("/").removesuffix(API_PREFIX)


def _path(ref: str, suffix: str = "") -> str:
    return f"/studies/{quote(ref, safe='')}{suffix}"


# --------------------------------------------------------------------------- specs


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a YAML study spec and validate it locally (errors name the field)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {_yaml_problem(exc)}", 2) from exc
    if not isinstance(data, dict):
        raise CliError(f"{path}: a study spec must be a YAML mapping", 2)
    _validate_locally(path, data)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem


def _validate_locally(path: Path, data: dict[str, Any]) -> None:
    try:
        from pydantic import ValidationError

        from service.spec import StudySpec
    except ImportError:  # base install without optuna: the server validates
        return
    try:
        StudySpec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        raise CliError(f"{path}: " + "; ".join(problems), 2) from exc


def _describe(err: Any) -> str:
    parts = [str(p) for p in err.get("loc", ())]
    parts = [p for p in parts if p not in _SPEC_DISCRIMINATORS and not p.startswith("function-")]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{'.'.join(parts)}: {msg}" if parts else msg


# --------------------------------------------------------------------------- commands


@study_app.command("create")
@_clean_errors
def create(
    file: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Create a study from a YAML spec (validated locally first)."""
    spec = load_spec_file(file)
    with api_client(server, token) as client:
        study = call(client, "POST", "/studies", json=spec).json()
    Console().print(f"created study {study['name']!r} (id {study['study_id']})", markup=False)


@study_app.command("list")
@_clean_errors
def list_studies(
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List studies with their trial counts."""
    with api_client(server, token) as client:
        page = call(client, "GET", "/studies", params={"limit": limit, "offset": offset}).json()
    table = Table("id", "name", "state", "sampler", "pruner", "done", "running", "failed", "total")
    for s in page["items"]:
        c = s["counts"]
        table.add_row(
            str(s["study_id"]),
            s["name"],
            s["state"],
            s["sampler"],
            s["pruner"],
            str(c["complete"] + c["pruned"]),
            str(c["running"] + c["queued"]),
            str(c["fail"]),
            f"{c['total']}/{s['max_trials']}",
        )
    console = Console()
    console.print(table)
    shown = f"{offset + 1}-{offset + len(page['items'])}" if page["items"] else "none"
    console.print(f"{page['total']} studies (showing {shown})", markup=False)


@study_app.command("show")
@_clean_errors
def show(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Show a study: state, counts and best trial (or Pareto front)."""
    with api_client(server, token) as client:
        study = call(client, "GET", _path(ref)).json()
    print_summary(study)


def print_summary(study: dict[str, Any]) -> None:
    """Rich tables of a study summary as the API returns it."""
    console = Console()
    info = Table("field", "value", show_header=False, title=f"study {study['name']}")
    for key in ("study_id", "state", "directions", "objectives", "sampler", "pruner", "seed"):
        value = study[key]
        info.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(info)
    counts = Table(*study["counts"].keys(), title="trials")
    counts.add_row(*(str(v) for v in study["counts"].values()))
    console.print(counts)
    best = [study["best_trial"]] if study.get("best_trial") else study.get("best_trials") or []
    if not best:
        console.print("no complete trial yet", markup=False)
        return
    table = Table(
        "number", "value(s)", "params", title="best trial" + ("s" if len(best) > 1 else "")
    )
    for trial in best[:20]:
        values = ", ".join(_fmt(v) for v in trial["values"])
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial["params"].items())
        table.add_row(str(trial["number"]), values, params)
    console.print(table)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _change(ref: str, action: str, server: str, token: str | None) -> None:
    with api_client(server, token) as client:
        study = call(client, "POST", _path(ref, f"/{action}")).json()
    Console().print(f"study {study['name']!r}: {study['state']}", markup=False)


@study_app.command("pause")
@_clean_errors
def pause(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Pause a study: no new trials until it is resumed."""
    _change(ref, "pause", server, token)


@study_app.command("resume")
@_clean_errors
def resume(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Resume a paused study."""
    _change(ref, "resume", server, token)


@study_app.command("stop")
@_clean_errors
def stop(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Stop a study for good (it cannot be resumed)."""
    _change(ref, "stop", server, token)


@study_app.command("delete")
@_clean_errors
def delete(
    ref: StudyRef,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    force: Annotated[bool, typer.Option("--force", help="delete even with active leases")] = False,
) -> None:
    """Delete a study and all its trials (Optuna's records included)."""
    with api_client(server, token) as client:
        call(client, "DELETE", _path(ref), params={"force": str(force).lower()})
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
    params = {"format": fmt.value}
    with api_client(server, token) as client:
        if output is None:
            download(client, _path(ref, "/export"), params, lambda b: typer.echo(b, nl=False))
            return
        sink = _LazyFile(output)
        try:
            size = download(client, _path(ref, "/export"), params, sink.write)
        finally:
            sink.close()
    Console(stderr=True).print(f"wrote {output} ({size} bytes)", markup=False)


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
