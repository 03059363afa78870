"""The `hpo` CLI's server-side commands: refusal rules, bootstrap tokens, db upgrade."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def test_refuses_public_bind_without_auth(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["server", "--host", "0.0.0.0", "--no-auth", "--database-url", url])
    assert result.exit_code == 2
    assert "without authentication" in result.output
    assert not (tmp_path / "x.db").exists()


def test_refuses_several_processes_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["server", "--workers", "4", "--database-url", url])
    assert result.exit_code == 2
    assert "SQLite is served by one process" in result.output


def test_token_create_rejects_unknown_role(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["token", "create", "--role", "root", "--database-url", url])
    assert result.exit_code == 2
    assert "--role must be one of" in result.output


def test_token_create_prints_a_working_token(tmp_path: Path) -> None:
    from service.core.auth import authenticate
    from service.core.config import Settings
    from service.core.db import Database

    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["token", "create", "--role", "viewer", "--database-url", url])
    assert result.exit_code == 0, result.output
    raw = result.output.strip().splitlines()[-1]
    db = Database(Settings(database_url=url))
    with db.session() as session:
        assert authenticate(session, raw).role == "viewer"
    db.dispose()


def test_bootstrap_tokens_written_once_with_0600(tmp_path: Path) -> None:
    from service.cli import bootstrap_tokens
    from service.core import migrate
    from service.core.config import Settings

    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate.upgrade(url)
    settings = Settings(database_url=url, token_file=tmp_path / "tokens.json")
    minted = bootstrap_tokens(settings)
    assert minted is not None and set(minted) == {"admin", "worker"}
    mode = stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode)
    assert mode == 0o600
    assert json.loads((tmp_path / "tokens.json").read_text()) == minted
    assert bootstrap_tokens(settings) is None  # second start: nothing new


def test_db_upgrade_command(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"hpo_studies", "hpo_trials", "hpo_leases", "hpo_alembic_version"} <= tables
