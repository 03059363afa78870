"""``hpo study ...`` against a real server: uvicorn on a free port, in a thread, over SQLite.

The CLI talks HTTP with httpx exactly as it does in production; the server
behind it is the real app (SQLite, auth on). Errors must be one line with a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from hpo.cli.study import study_app
from service.core.db import utcnow
from tests.service.test_studies_api import add_lease, add_trial_row, run_trials
from tests.support import LiveApp, free_port, live_app, study_spec

#: The space of the CLI's studies (two parameters, both valid for the trainer).
CLI_SPACE = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "lr": {"type": "float", "low": 0.0001, "high": 1.0, "log": True},
}


def spec_yaml(name: str) -> str:
    """The spec file a user would write for ``hpo study create``."""
    body = study_spec(
        name, sampler={"name": "random", "seed": 3}, budget={"max_trials": 20}, space=CLI_SPACE
    )
    return yaml.safe_dump(body, sort_keys=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live_app(tmp_path_factory.mktemp("cli")) as server:
        yield server


def hpo(live: LiveApp, *args: str, token: str | None = "admin", **env: str | None) -> Result:
    """Run ``hpo study ARGS`` with the server and token taken from the environment."""
    values: dict[str, str | None] = {
        "HPO_SERVER": live.url,
        "HPO_TOKEN": getattr(live.tokens, token) if token else None,
        "HPO_TOKEN_FILE": None,
        "COLUMNS": "200",
    }
    values.update(env)
    result = CliRunner().invoke(study_app, list(args), env=values)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def spec_file(tmp_path: Path, name: str, text: str | None = None) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text if text is not None else spec_yaml(name))
    return str(path)


def test_create_list_and_show(live: LiveApp, tmp_path: Path) -> None:
    created = hpo(live, "create", spec_file(tmp_path, "cli-one"))
    assert created.exit_code == 0, created.output
    assert "created study 'cli-one' (id " in created.output
    study_id = created.output.split("(id ")[1].split(")")[0]
    run_trials(live.ctx, "cli-one", [0.5, 0.75, "pruned"])

    listing = hpo(live, "list")
    assert listing.exit_code == 0 and "cli-one" in listing.output
    assert "no_workers" in listing.output  # its label: waiting, on no live worker
    for ref in ("cli-one", study_id):
        shown = hpo(live, "show", ref)
        assert shown.exit_code == 0, shown.output
        assert "no_workers" in shown.output and "waiting because" in shown.output
        assert "cli-one" in shown.output and "random" in shown.output
        assert "best trial" in shown.output and "0.75" in shown.output

    duplicate = hpo(live, "create", spec_file(tmp_path, "cli-one"))
    assert duplicate.exit_code == 1
    assert "409 a study named 'cli-one' already exists" in duplicate.output


def test_bad_specs_are_refused_before_any_network_call(live: LiveApp, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    bad = spec_yaml("bad").replace("high: 1.0", "high: 0.00001")
    cases = {
        "space.lr: low (0.0001) must be < high (1e-05)": spec_file(tmp_path, "bad", bad),
        "not valid YAML": spec_file(tmp_path, "broken", "name: [unclosed"),
        "must be a YAML mapping": spec_file(tmp_path, "listed", "- a\n- b\n"),
        "No such file": str(tmp_path / "missing.yaml"),
    }
    for expected, path in cases.items():
        result = hpo(live, "create", path, HPO_SERVER=nowhere)
        assert result.exit_code == 2, result.output
        assert expected in result.output and "cannot reach" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_pause_resume_stop_and_conflicts(live: LiveApp, tmp_path: Path) -> None:
    assert hpo(live, "create", spec_file(tmp_path, "cli-states")).exit_code == 0
    assert "cli-states': paused" in hpo(live, "pause", "cli-states").output
    assert "cli-states': running" in hpo(live, "resume", "cli-states").output
    assert "cli-states': stopped" in hpo(live, "stop", "cli-states").output
    refused = hpo(live, "resume", "cli-states")
    assert refused.exit_code == 1
    assert "409" in refused.output and "cannot be resumed" in refused.output
    missing = hpo(live, "show", "no-such-study")
    assert missing.exit_code == 1
    assert "404 study 'no-such-study' not found" in missing.output


def test_export_and_delete(live: LiveApp, tmp_path: Path) -> None:
    assert hpo(live, "create", spec_file(tmp_path, "cli-export")).exit_code == 0
    run_trials(live.ctx, "cli-export", [0.25, 0.5, "running"])
    out = tmp_path / "trials.csv"
    written = hpo(live, "export", "cli-export", "--format", "csv", "--output", str(out))
    assert written.exit_code == 0, written.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("number,trial_id,state,value,params_optimizer,params_lr")
    assert len(lines) == 4
    as_json = hpo(live, "export", "cli-export", "-f", "json")
    assert as_json.exit_code == 0
    assert [t["state"] for t in json.loads(as_json.stdout)["trials"]] == [
        "complete",
        "complete",
        "running",
    ]
    nothing = tmp_path / "none.csv"
    refused = hpo(live, "export", "no-such-study", "--output", str(nothing))
    assert refused.exit_code == 1 and not nothing.exists()

    row = add_trial_row(
        live.ctx,
        "cli-export",
        2,
        "leased",
        worker_id="w1",
        lease_expires_at=utcnow() + timedelta(minutes=1),
    )
    add_lease(live.ctx, row, 1, "active")
    busy = hpo(live, "delete", "cli-export")
    assert busy.exit_code == 1 and "active lease" in busy.output
    assert "deleted study 'cli-export'" in hpo(live, "delete", "cli-export", "--force").output
    assert hpo(live, "show", "cli-export").exit_code == 1


def test_unreachable_server_is_one_clear_line(live: LiveApp) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["show", "x"], ["export", "x"], ["list", "--server", nowhere]):
        env = {"HPO_SERVER": nowhere}
        result = hpo(live, *args, **env)
        assert result.exit_code == 1
        assert result.output.strip() == f"error: cannot reach server at {nowhere}"


def test_token_from_the_bootstrap_file_and_auth_errors(
    live: LiveApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    no_token = hpo(live, "list", token=None)
    assert no_token.exit_code == 1 and "401 missing bearer token" in no_token.output

    Path("hpo-tokens.json").write_text(json.dumps({"admin": live.tokens.admin, "worker": "x"}))
    assert hpo(live, "list", token=None).exit_code == 0  # read from ./hpo-tokens.json

    elsewhere = tmp_path / "other.json"
    elsewhere.write_text(json.dumps({"admin": "hpo_wrong"}))
    wrong = hpo(live, "list", token=None, HPO_TOKEN_FILE=str(elsewhere))
    assert wrong.exit_code == 1 and "401 invalid token" in wrong.output
    assert hpo(live, "list", "--token", live.tokens.admin, token=None).exit_code == 0

    elsewhere.write_text("{not json")
    broken = hpo(live, "list", token=None, HPO_TOKEN_FILE=str(elsewhere))
    assert broken.exit_code == 2 and "not a JSON token file" in broken.output

    viewer = hpo(live, "create", spec_file(tmp_path, "cli-viewer"), token="viewer")
    assert viewer.exit_code == 1 and "403" in viewer.output
    assert hpo(live, "list", token="viewer").exit_code == 0
