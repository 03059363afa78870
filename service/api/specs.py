"""The study spec's JSON Schema, for editors and validators (no token needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hpo.spec import spec_json_schema

router = APIRouter(tags=["studies"])


@router.get("/spec-schema")
def spec_schema() -> dict[str, Any]:
    """JSON Schema of a study spec (the body of ``POST /studies``, the YAML files)."""
    return spec_json_schema()
