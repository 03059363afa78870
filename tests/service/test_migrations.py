"""Alembic migrations of the hpo_ tables next to Optuna's own, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from service.app import SchemaOutdated, create_app
from service.core import migrate
from service.storage.models import Base
from tests.conftest import make_settings

HPO_TABLES = {table.name for table in Base.metadata.sorted_tables}


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """These tests migrate themselves: an empty database, not the migrated template's copy."""
    return empty_db_url


def _version(url: str, table: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if table not in inspect(conn).get_table_names():
                return None
            return conn.execute(text(f"SELECT version_num FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_on_an_empty_database(db_url: str) -> None:
    migrate.upgrade(db_url)
    tables = _tables(db_url)
    assert tables >= HPO_TABLES
    assert "alembic_version" not in tables  # Optuna's table is Optuna's business
    assert _version(db_url, migrate.VERSION_TABLE) == migrate.head_revision(db_url)
    command.check(migrate.alembic_config(db_url))  # models and migrations agree
    migrate.upgrade(db_url)  # idempotent
    assert _version(db_url, migrate.VERSION_TABLE) == migrate.head_revision(db_url)


def test_upgrade_where_optuna_already_created_its_tables(db_url: str) -> None:
    storage = optuna.storages.RDBStorage(db_url)
    optuna.create_study(study_name="before", storage=storage)
    optuna_revision = _version(db_url, "alembic_version")
    assert optuna_revision
    storage.engine.dispose()

    migrate.upgrade(db_url)

    assert _version(db_url, "alembic_version") == optuna_revision  # untouched
    assert _version(db_url, migrate.VERSION_TABLE) == migrate.head_revision(db_url)
    assert _tables(db_url) >= HPO_TABLES
    command.check(migrate.alembic_config(db_url))
    # Optuna still opens its storage (it checks its own version) and keeps its study.
    reopened = optuna.storages.RDBStorage(db_url)
    assert optuna.get_all_study_names(reopened) == ["before"]
    reopened.engine.dispose()


def test_is_up_to_date_follows_the_upgrade(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert not migrate.is_up_to_date(engine)
        migrate.upgrade(db_url)
        assert migrate.is_up_to_date(engine)
    finally:
        engine.dispose()


def test_app_without_auto_migrate_refuses_an_empty_database(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, auto_migrate=False)
    with pytest.raises(SchemaOutdated, match="hpo db upgrade"):
        create_app(settings)
    migrate.upgrade(db_url)
    app = create_app(settings)  # up to date: starts without migrating
    app.state.ctx.close()
