"""Health endpoints, metrics, tokens, body limits and security headers."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import Tokens


def test_health_and_ready(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_metrics_prometheus_format(client) -> None:
    client.get("/healthz")
    body = client.get("/metrics").text
    assert "hpo_leases_granted_total" in body
    assert 'hpo_request_latency_seconds_count{method="GET",route="/healthz",status="200"}' in body


def test_security_headers(client) -> None:
    response = client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_oversized_body_rejected_with_413(admin) -> None:
    response = admin.post("/api/v1/tokens", content=b"x" * 2_000_000)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_token_lifecycle_and_roles(client, tokens: Tokens, ctx) -> None:
    anon = client.post("/api/v1/tokens", json={"role": "viewer"})
    assert anon.status_code == 401
    bad = client.post(
        "/api/v1/tokens", json={"role": "viewer"}, headers=Tokens.header("hpo_nonsense")
    )
    assert bad.status_code == 401
    for token in (tokens.viewer, tokens.worker):
        denied = client.post("/api/v1/tokens", json={"role": "admin"}, headers=Tokens.header(token))
        assert denied.status_code == 403, denied.text
    created = client.post(
        "/api/v1/tokens", json={"role": "viewer", "name": "ci"}, headers=Tokens.header(tokens.admin)
    )
    assert created.status_code == 201
    raw = created.json()["token"]
    # Stored hashed: the raw token appears nowhere in the token table.
    with ctx.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM hpo_tokens")).fetchall()
    assert rows and all(raw not in " ".join(map(str, row)) for row in rows)
    listing = client.get("/api/v1/tokens", headers=Tokens.header(raw))
    assert listing.status_code == 403
    token_id = created.json()["id"]
    revoked = client.delete(f"/api/v1/tokens/{token_id}", headers=Tokens.header(tokens.admin))
    assert revoked.status_code == 204
    assert client.get("/api/v1/tokens", headers=Tokens.header(raw)).status_code == 401


def test_token_create_validates_role(admin) -> None:
    response = admin.post("/api/v1/tokens", json={"role": "root"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("role:")
