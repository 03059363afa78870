"""The study spec's JSON Schema: served by the API, kept in docs/, and it matches the model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from hpo.spec import spec_json_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "spec-schema.json"


def test_the_file_in_docs_is_the_current_schema() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == spec_json_schema(), (
        "docs/spec-schema.json is stale: regenerate it with "
        "`hpo study schema > docs/spec-schema.json`"
    )


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_validates_against_the_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), spec_json_schema())


def test_the_schema_refuses_what_the_model_refuses() -> None:
    with pytest.raises(jsonschema.ValidationError, match="trials"):
        jsonschema.validate({"name": "x", "space": {}, "trials": 3}, spec_json_schema())


def test_printed_by_the_cli() -> None:
    from typer.testing import CliRunner

    from hpo.cli.study import study_app

    result = CliRunner().invoke(study_app, ["schema"])
    assert result.exit_code == 0 and json.loads(result.stdout) == spec_json_schema()


def test_served_to_any_token(tmp_path: Path) -> None:
    from service.app import create_app
    from tests.conftest import Tokens, make_settings, mint_tokens

    app = create_app(make_settings(f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path))
    tokens = mint_tokens(app.state.ctx)
    with TestClient(app) as client:
        anonymous = client.get("/api/v1/spec-schema")
        response = client.get("/api/v1/spec-schema", headers=Tokens.header(tokens.viewer))
    app.state.ctx.close()
    assert anonymous.status_code == 401
    assert response.status_code == 200
    assert response.json() == spec_json_schema()
