"""The study spec's JSON Schema, for validators (any token; editors read the copy in docs/)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hpo.spec import spec_json_schema
from service.api.deps import ViewerDep
from service.api.errors import error_responses

router = APIRouter(tags=["studies"], responses=error_responses(401))


@router.get("/spec-schema")
def spec_schema(_: ViewerDep) -> dict[str, Any]:
    """JSON Schema of a study spec (the body of ``POST /studies``, the YAML files)."""
    return spec_json_schema()
