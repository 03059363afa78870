"""Alembic environment for the service's own ``hpo_`` tables.

Optuna keeps its own ``alembic_version`` row in the same database, so this
environment uses ``hpo_alembic_version`` and only looks at ``hpo_`` tables
when comparing the models to the database (``alembic check``).
"""

from __future__ import annotations

from typing import Any

from alembic import context

from service.core.db import make_engine
from service.storage.models import Base

VERSION_TABLE = "hpo_alembic_version"


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    if type_ == "table":
        return bool(name and name.startswith("hpo_")) and name != VERSION_TABLE
    table = getattr(obj, "table", None)
    if table is not None:
        return str(table.name).startswith("hpo_")
    return True


def run_migrations() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=_include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
