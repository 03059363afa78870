"""Shared fixtures: real SQLite files and real PostgreSQL databases, an app, tokens.

PostgreSQL: ``HPO_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, database ``postgres``) is used to create a fresh database per
test and drop it afterwards. Without a reachable server the PostgreSQL cases
skip with the reason, unless ``HPO_REQUIRE_POSTGRES=1`` (set by CI), which
turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def mnist_root() -> Path:
    """MNIST folder: ``HPO_DATA_DIR`` or the shared data folder beside the repo."""
    return Path(os.environ.get("HPO_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test as ``rep_setup``/``rep_call``/``rep_teardown``
    (fixtures read ``rep_call`` to print the processes' logs of a failed test)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _pg_admin_url() -> str:
    return os.environ.get("HPO_TEST_POSTGRES_URL", DEFAULT_PG)


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("HPO_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required (HPO_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL not reachable: {reason}")


def create_pg_database(template: str | None = None) -> str:
    """Create a database on the test server (empty, or a copy of ``template``); returns its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin_url = make_url(_pg_admin_url())
    name = f"hpo_t_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        _pg_unavailable(str(exc).splitlines()[0])
    return admin_url.set(database=name).render_as_string(hide_password=False)


def _migrate(url: str, tmp_path: Path) -> None:
    """Create the service's and Optuna's tables as a server's start-up does."""
    from service.app import create_app

    create_app(make_settings(url, tmp_path)).state.ctx.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per test process: tests start from a copy."""
    folder = tmp_path_factory.mktemp("template")
    _migrate(f"sqlite:///{folder / 'build.db'}", folder)
    # The backup API copies the whole database, write-ahead log included, even
    # while a connection the app left to the garbage collector still holds it.
    source, template = sqlite3.connect(folder / "build.db"), sqlite3.connect(folder / "hpo.db")
    with template:
        source.backup(template)
    source.close()
    template.close()
    assert not (folder / "hpo.db-wal").exists()  # all of it is in the one file
    return folder / "hpo.db"


@pytest.fixture(scope="session")
def pg_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated PostgreSQL database, made once per test process.

    Migrating takes about 2 s per database (Optuna's tables and ours); a copy
    of this template takes a fraction of that and holds the same schema.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = create_pg_database()
    _migrate(url, tmp_path_factory.mktemp("pg-template"))
    name = str(make_url(url).database)
    # A copy needs the template without sessions: close any the app left to the
    # garbage collector, and refuse new ones (as template0 does).
    engine = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    engine.dispose()
    yield name
    drop_pg_database(url)


def drop_pg_database(url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each kind, already migrated (a copy of the process's template)."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "hpo.db")
        yield f"sqlite:///{tmp_path / 'hpo.db'}"
        return
    url = create_pg_database(template=request.getfixturevalue("pg_template"))
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind (for the migrations' own tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hpo.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (for tests that need PostgreSQL specifically)."""
    url = create_pg_database(template=pg_template)
    yield url
    drop_pg_database(url)


@dataclass
class Tokens:
    admin: str
    worker: str
    viewer: str

    @staticmethod
    def header(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def make_settings(db_url: str, tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    from service.core.config import Settings

    values: dict[str, object] = {
        "database_url": db_url,
        "auth": True,
        "token_file": tmp_path / "tokens.json",
        "lease_ttl_s": 30.0,
        "heartbeat_interval_s": 5.0,
        "reaper_interval_s": 3600.0,  # tests call the reaper explicitly
    }
    values.update(overrides)
    return Settings(**values)


def mint_tokens(ctx) -> Tokens:  # type: ignore[no-untyped-def]
    from service.core.auth import create_token_without_commit

    with ctx.db.session() as session:
        admin, _ = create_token_without_commit(session, "admin", "test-admin")
        worker, _ = create_token_without_commit(session, "worker", "test-worker")
        viewer, _ = create_token_without_commit(session, "viewer", "test-viewer")
    return Tokens(admin=admin, worker=worker, viewer=viewer)


@pytest.fixture
def settings(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_settings(db_url, tmp_path)


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    from service.app import create_app

    application = create_app(settings)
    yield application
    application.state.ctx.close()


@pytest.fixture
def ctx(app):  # type: ignore[no-untyped-def]
    return app.state.ctx


@pytest.fixture
def tokens(ctx) -> Tokens:  # type: ignore[no-untyped-def]
    return mint_tokens(ctx)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    """A TestClient without credentials (add headers per request)."""
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def admin(client, tokens):  # type: ignore[no-untyped-def]
    """A TestClient that sends the admin token."""
    client.headers.update(Tokens.header(tokens.admin))
    return client
