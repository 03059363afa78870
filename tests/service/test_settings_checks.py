"""Server settings are checked as a whole (issue 27, part 6), and the app keeps what it
remembers between requests on its context, not in module globals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app as cli
from service.core.config import Settings
from service.fleet import registry
from service.fleet.registry import TouchThrottle

PG = "postgresql+psycopg://u@db/hpo"


def test_the_defaults_are_consistent() -> None:
    assert Settings().inconsistencies() == []


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        ({"lease_ttl_s": 20, "heartbeat_interval_s": 7}, ["heartbeat_interval_s", "lease_ttl_s"]),
        ({"worker_timeout_s": 10, "heartbeat_interval_s": 10}, ["worker_timeout_s"]),
        ({"worker_timeout_s": 4}, ["worker_timeout_s"]),
        ({"worker_forget_s": 60, "worker_timeout_s": 120}, ["worker_forget_s", "worker_timeout_s"]),
        ({"workers": 2, "database_url": "sqlite:///x.db"}, ["workers", "database_url"]),
    ],
)
def test_a_bad_combination_is_refused_naming_its_fields(
    values: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    message = str(caught.value)
    assert all(name in message for name in fields), message


def test_the_boundaries_are_allowed() -> None:
    Settings(lease_ttl_s=3, heartbeat_interval_s=1)  # exactly three heartbeats per lease
    Settings(workers=4, database_url=PG)
    Settings(worker_forget_s=120, worker_timeout_s=120)


def test_the_server_refuses_to_start_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_LEASE_TTL_S", "10")
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL_S", "5")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(cli, ["server", "--database-url", url])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "heartbeat_interval_s" in lines[0] and "lease_ttl_s" in lines[0]
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_touch_throttle_is_per_object() -> None:
    first, second = TouchThrottle(every_s=60), TouchThrottle(every_s=60)
    assert first.due("w1") and not first.due("w1")
    assert second.due("w1")  # another app context has its own memory
    assert TouchThrottle(every_s=0).due("w1")


def test_each_app_context_owns_a_throttle(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from service.core.context import AppContext

    other = AppContext.build(ctx.settings.model_copy(update={"token_file": tmp_path / "t"}))
    try:
        assert isinstance(ctx.touches, TouchThrottle) and other.touches is not ctx.touches
    finally:
        other.close()


def test_the_registry_module_holds_no_mutable_state() -> None:
    mutable = {
        name
        for name, value in vars(registry).items()
        if not name.startswith("__") and isinstance(value, dict | list | set)
    }
    assert mutable == set()
