"""The API does what its schema says (issue 27, part 7): booleans are not numbers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.service.lease_helpers import API, Worker, create_study


@pytest.mark.parametrize(
    "body",
    [{"wait_s": False}, {"wait_s": True}, {"max_trials": True}],
)
def test_lease_refuses_booleans_as_numbers(client, tokens, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    worker = Worker(client, tokens.worker)
    assert worker.lease_raw(**body).status_code == 422
    assert worker.lease_raw(wait_s=0, max_trials=1).status_code == 200  # ints still are


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("report", {"step": True, "value": 0.5}),
        ("report", {"step": 0, "value": False}),
        ("heartbeat", {"progress": True}),
        ("complete", {"value": True}),
        ("complete", {"values": [0.1, False]}),
    ],
)
def test_lease_bodies_refuse_booleans_as_numbers(
    client, tokens, verb: str, body: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    create_study(client, tokens)
    worker = Worker(client, tokens.worker)
    lease_id = worker.trial()["lease_id"]
    assert worker.post(lease_id, verb, body).status_code == 422
    assert worker.post(lease_id, "report", {"step": 0, "value": 1}).status_code == 200


def test_registration_refuses_a_boolean_gpu_count(client, tokens) -> None:  # type: ignore[no-untyped-def]
    body = {"hostname": "h", "devices": [], "version": "t", "resources": {"gpus": True}}
    answer = client.post(f"{API}/workers/register", json=body, headers=tokens.header(tokens.worker))
    assert answer.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/studies", "GET, POST"),  # two methods documented at the path
        ("PATCH", "/studies/s1", "DELETE, GET"),  # Starlette named only one route's
        ("GET", "/trials/lease", "POST"),
        ("DELETE", "/leases/x/study", "GET"),
        ("OPTIONS", "/workers/register", "POST"),  # not /workers/{worker_id}'s GET
    ],
)
def test_405_answers_name_every_documented_method(  # type: ignore[no-untyped-def]
    client, tokens, method: str, path: str, allow: str
) -> None:
    answer = client.request(method, f"{API}{path}", headers=tokens.header(tokens.admin))
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow


def _string_schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _string_schemas(item)
    elif isinstance(node, dict):
        if node.get("type") == "string":
            yield node
        for key, value in node.items():
            if key not in ("example", "examples", "default"):
                yield from _string_schemas(value)


def test_the_schema_says_nul_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get("/openapi.json").json()
    strings = list(_string_schemas(schema))
    assert len(strings) > 50
    free = [s for s in strings if not ({"enum", "const", "format"} & s.keys())]
    lax = [s for s in free if re.fullmatch(s.get("pattern", ".*"), "a\x00b")]
    assert lax == [], f"{len(lax)} string schemas allow NUL, e.g. {lax[:2]}"
    metrics = schema["components"]["schemas"]["ReportRequest"]["properties"]["metrics"]
    assert not re.fullmatch(metrics["propertyNames"]["pattern"], "k\x00")  # keys too
