"""Privacy, fairness and robustness studies at creation: the shipped specs create with
``hpo study create FILE`` on a real server; settings DP-SGD cannot run with are a 422 from the
API (and a one-line CLI error) that names the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from hpo.cli.study import study_app
from tests.support import API, LiveApp, live_app

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SHIPPED = ("mnist-privacy", "mnist-fairness", "mnist-robustness")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live_app(tmp_path_factory.mktemp("responsible")) as server:
        yield server


def hpo_study(live: LiveApp, *args: str) -> tuple[int, str]:
    env = {"HPO_SERVER": live.url, "HPO_TOKEN": live.tokens.admin, "HPO_TOKEN_FILE": None}
    result = CliRunner().invoke(study_app, list(args), env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_creates_with_the_cli(live: LiveApp, name: str) -> None:
    code, output = hpo_study(live, "create", "-f", str(STUDIES / f"{name}.yaml"))
    assert code == 0, output
    assert f"created study '{name}'" in output


def private_spec(**changes: object) -> dict[str, object]:
    body = yaml.safe_load((STUDIES / "mnist-privacy.yaml").read_text())
    body["name"] = f"private-{len(changes)}-{sorted(changes)}"
    for key, value in changes.items():
        section, name = key.split(":")
        body[section][name] = value
    return body


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"fixed:batch_norm": True}, "fixed.batch_norm"),
        (
            {"space:batch_norm": {"type": "categorical", "choices": [False, True]}},
            "space.batch_norm.choices[1]",
        ),
        ({"fixed:optimizer": "gd"}, "fixed.optimizer"),
        ({"space:l1": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True}}, "space.l1.high"),
        ({"fixed:class_balance": "oversample"}, "fixed.class_balance"),
    ],
)
def test_settings_dp_sgd_cannot_run_are_422_naming_the_field(
    live: LiveApp, changes: dict[str, object], where: str
) -> None:
    headers = {"Authorization": f"Bearer {live.tokens.admin}"}
    response = httpx.post(f"{live.url}{API}/studies", json=private_spec(**changes), headers=headers)
    assert response.status_code == 422, response.text
    assert where in response.text and "DP-SGD" in response.text


def test_a_bad_nested_setting_is_422_naming_its_dotted_path(live: LiveApp) -> None:
    body = private_spec()
    body["space"]["noise_multiplier"]["low"] = -1.0  # type: ignore[index]
    body["space"]["noise_multiplier"]["log"] = False  # type: ignore[index]
    headers = {"Authorization": f"Bearer {live.tokens.admin}"}
    response = httpx.post(f"{live.url}{API}/studies", json=body, headers=headers)
    assert response.status_code == 422
    assert "privacy.noise_multiplier" in response.text
