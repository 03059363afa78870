"""Item 5: hostile input. Hand-written cases (SQLite and PostgreSQL), each a 4xx that
names the problem; and a bounded, seeded schemathesis run against a live server
(``test_fuzz.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect

from tests.conftest import Tokens
from tests.faults.conftest import FIGURES
from tests.service.lease_helpers import Worker, create_study, expire_and_reap, spec

pytestmark = pytest.mark.faults

JSON = {"content-type": "application/json"}
HOSTILE: dict[str, int] = {"cases": 0, "5xx": 0}


def _expect(resp: Any, status: int, *words: str) -> None:
    HOSTILE["cases"] += 1
    HOSTILE["5xx"] += resp.status_code >= 500
    FIGURES["hostile hand-written"] = f"cases={HOSTILE['cases']} 5xx={HOSTILE['5xx']}"
    assert resp.status_code == status, f"{resp.status_code}: {resp.text[:300]}"
    text = resp.text.lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not named in {resp.text[:300]}"


@pytest.fixture
def lease(client, tokens: Tokens) -> tuple[Worker, str]:
    create_study(client, tokens, name="hostile")
    worker = Worker(client, tokens.worker)
    return worker, worker.trial()["lease_id"]


def test_oversized_bodies_are_413_declared_or_streamed(client, tokens: Tokens) -> None:
    big = b'{"name": "' + b"x" * 2_000_000 + b'"}'
    headers = {**Tokens.header(tokens.admin), **JSON}
    _expect(client.post("/api/v1/studies", content=big, headers=headers), 413, "larger than")

    def chunks() -> Any:  # no Content-Length: the limit counts streamed bytes
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    _expect(client.post("/api/v1/studies", content=chunks(), headers=headers), 413, "body")


def test_deeply_nested_json_is_422(lease) -> None:
    worker, lid = lease
    for depth in (1_000, 200_000):
        body = '{"step": 1, "value": 0.5, "metrics": {"a": ' + "[" * depth + "]" * depth + "}}"
        resp = worker.client.post(
            f"/api/v1/leases/{lid}/report", content=body, headers={**worker.headers, **JSON}
        )
        _expect(resp, 422, "body")


NUMBERS = [
    ("report", '{"step": 1, "value": NaN}', "value"),
    ("report", '{"step": 1, "value": Infinity}', "value"),
    ("report", '{"step": 1, "value": 1e999}', "value"),
    ("report", '{"step": 1, "value": 0.1, "metrics": {"loss": -Infinity}}', "loss"),
    ("complete", '{"value": NaN}', "value"),
    ("complete", '{"value": 0.5, "metrics": {"acc": NaN}}', "acc"),
    ("report", '{"step": 100000000000000000000, "value": 0.1}', "step"),
    ("report", '{"step": -1, "value": 0.1}', "step"),
]


def test_non_finite_and_out_of_range_numbers_are_422(lease) -> None:
    worker, lid = lease
    for verb, body, field in NUMBERS:
        resp = worker.client.post(
            f"/api/v1/leases/{lid}/{verb}", content=body, headers={**worker.headers, **JSON}
        )
        _expect(resp, 422, field)
        assert worker.ok(lid, "heartbeat")["action"] == "continue"  # the lease is unharmed


CONTROL = [
    ("/workers/register", {"hostname": "box\x00evil"}, "hostname"),
    ("/workers/register", {"hostname": "box", "name": "n\x00"}, "name"),
    ("/tokens", {"role": "viewer", "name": "t\x00"}, "name"),
    ("/studies", {**spec("ok"), "description": "d\x00"}, "description"),
    ("/studies", spec("bad\x00name"), "name"),
    ("/studies", spec("rtl\u202eeman"), "name"),
    ("/studies", spec("bell\x07"), "name"),
    ("/studies", spec("line\nbreak"), "name"),
]


def test_control_characters_in_names_are_422(client, tokens) -> None:
    for path, body, field in CONTROL:
        resp = client.post(f"/api/v1{path}", json=body, headers=Tokens.header(tokens.admin))
        _expect(resp, 422, field)


def test_nul_in_a_finish_request_is_422_and_never_sticks(lease, ctx) -> None:
    """A NUL in ``diagnosis``/``reason`` used to leave the lease in ``finishing`` on PG."""
    worker, lid = lease
    _expect(worker.post(lid, "complete", {"value": 0.5, "diagnosis": "d\x00"}), 422, "diagnosis")
    _expect(worker.post(lid, "fail", {"reason": "boom\x00"}), 422, "reason")
    _expect(worker.post(lid, "complete", {"value": 0.5, "metrics": {"k\x00": 1}}), 422, "metrics")
    assert worker.ok(lid, "complete", {"value": 0.5})["state"] == "complete"


def test_unicode_names_round_trip(client, tokens) -> None:
    name = "étude-学習-😀"
    create_study(client, tokens, name=name)
    got = client.get(f"/api/v1/studies/{name}", headers=Tokens.header(tokens.viewer))
    assert got.status_code == 200 and got.json()["name"] == name


PAGINATION = [
    ("/studies?limit=-1", "limit"),
    ("/studies?limit=0", "limit"),
    ("/studies?limit=100000000000000000000000", "limit"),
    ("/studies?offset=-5", "offset"),
    ("/studies?offset=100000000000000000000000", "offset"),
    ("/studies?limit=abc", "limit"),
    ("/studies/hostile/trials?offset=-1", "offset"),
    ("/studies/hostile/trials?limit=99999999999999999999", "limit"),
    ("/studies/hostile/trials/99999999999999999999", "number"),
    ("/studies/hostile/trials/-1", "number"),
    ("/studies/hostile/trials?state=%27%20OR%201%3D1%20--", "state"),
    ("/studies/a%00b", "path"),
]


def test_bad_pagination_and_ids_are_422(client, tokens, lease) -> None:
    for url, field in PAGINATION:
        _expect(client.get(f"/api/v1{url}", headers=Tokens.header(tokens.viewer)), 422, field)


def test_huge_token_id_is_422_not_500(client, tokens) -> None:
    url = "/api/v1/tokens/99999999999999999999"
    _expect(client.delete(url, headers=Tokens.header(tokens.admin)), 422, "token_id")


def test_a_report_for_another_workers_lease_is_refused(client, tokens, ctx) -> None:
    """A's lease expired and the trial went to B: A's report, heartbeat and complete get 409
    naming the lease; a forged lease id gets 404; B's run is unharmed."""
    create_study(client, tokens, name="theft", budget={"max_trials": 5, "max_retries": 3})
    a, b = Worker(client, tokens.worker), Worker(client, tokens.worker)
    old = a.trial()
    expire_and_reap(ctx, old["lease_id"])
    new = b.trial()
    assert new["trial_id"] == old["trial_id"] and new["lease_id"] != old["lease_id"]
    for verb, body in (
        ("report", {"step": 1, "value": 0.1}),
        ("heartbeat", {}),
        ("complete", {"value": 9.0}),
    ):
        _expect(a.post(old["lease_id"], verb, body), 409, "lease")
    _expect(
        a.post("00000000-0000-0000-0000-000000000000", "report", {"step": 1, "value": 0.1}),
        404,
        "lease",
    )
    assert b.ok(new["lease_id"], "complete", {"value": 0.25})["value"] == 0.25


SQLISH = [
    "x'; DROP TABLE hpo_studies; --",
    "1 OR 1=1",
    "%' UNION SELECT token_hash FROM hpo_tokens",
]


def test_sql_looking_strings_are_just_strings(client, tokens, ctx) -> None:
    admin = Tokens.header(tokens.admin)
    created = []
    for name in SQLISH:
        resp = client.post("/api/v1/studies", json=spec(name), headers=admin)
        HOSTILE["cases"] += 1
        assert resp.status_code in (201, 422), resp.text
        created += [name] if resp.status_code == 201 else []
    got = client.get("/api/v1/studies", headers=admin).json()["items"]
    assert [s["name"] for s in got] == created
    w = Worker(client, tokens.worker)
    answer = w.lease(studies=["nope'--", "' OR '1'='1"])
    assert answer["trial"] is None and "no study named" in answer["reason"]
    missing = client.get("/api/v1/studies/' OR '1'='1/trials", headers=admin)
    _expect(missing, 404, "not found")
    tables = set(inspect(ctx.db.engine).get_table_names())
    assert {"hpo_studies", "hpo_tokens", "hpo_trials", "trials"} <= tables
