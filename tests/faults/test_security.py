"""Item 6: roles, hashed tokens, constant-time comparison, headers, no tokens in logs or URLs.

The 401/403 matrix per route lives in tests/service/test_auth_matrix.py; here
the same promises are checked end to end on a live server, plus what the
matrix cannot see: the database holds no raw token (row dump, SQLite file
bytes, ``pg_dump``), the server log holds none, tokens in a URL are ignored,
and every kind of answer carries the security headers.
"""

from __future__ import annotations

import glob
import hashlib
import inspect as pyinspect
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from service.core import auth
from tests.conftest import Tokens
from tests.faults.harness import spec, start_server
from tests.support import API

pytestmark = pytest.mark.faults

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _forbidden_mutations(http: httpx.Client, token: str) -> list[str]:
    """Every admin-only mutation with ``token``; returns what was not refused with 403."""
    calls = [
        ("POST", "/studies", spec("intruder", 5)),
        ("POST", "/studies/target/stop", None),
        ("POST", "/studies/target/pause", None),
        ("DELETE", "/studies/target", None),
        ("POST", "/tokens", {"role": "admin", "name": "escalate"}),
        ("GET", "/tokens", None),
        ("DELETE", "/tokens/1", None),
    ]
    wrong = []
    for method, path, body in calls:
        resp = http.request(method, API + path, json=body, headers=_h(token))
        if resp.status_code != 403 or "role" not in resp.json()["detail"]:
            wrong.append(f"{method} {path}: {resp.status_code} {resp.text[:100]}")
    return wrong


def _check_headers(resp: httpx.Response, what: str) -> None:
    for name, value in HEADERS.items():
        assert resp.headers.get(name) == value, f"{what}: {name}={resp.headers.get(name)}"


def test_live_roles_headers_and_no_token_in_logs(tmp_path: Path, figures) -> None:
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'sec.db'}", HPO_MAX_BODY_BYTES="10000")
    try:
        boot = server.tokens()
        with httpx.Client(base_url=server.url, timeout=10) as http:
            made = http.post(f"{API}/studies", json=spec("target", 5), headers=_h(boot["admin"]))
            assert made.status_code == 201, made.text
            viewer = http.post(
                f"{API}/tokens", json={"role": "viewer", "name": "v"}, headers=_h(boot["admin"])
            ).json()["token"]
            for role, token in (("viewer", viewer), ("worker", boot["worker"])):
                assert _forbidden_mutations(http, token) == [], role
            after = http.get(f"{API}/studies/target", headers=_h(viewer)).json()
            assert after["state"] == "running"
            tokens = http.get(f"{API}/tokens", headers=_h(boot["admin"])).json()
            assert [t["role"] for t in tokens] == ["admin", "worker", "viewer"]
            assert all("token" not in t and "token_hash" not in t for t in tokens), tokens
            _headers_everywhere(http, viewer)
            _url_tokens_ignored(http, viewer)
            _dashboard_login(http, viewer)
        secrets = [boot["admin"], boot["worker"], viewer]
        log = server.log()
        assert not [s for s in secrets if s in log], "a raw token is in the server log"
        _no_raw_tokens_in_sqlite(tmp_path / "sec.db", secrets)
        figures["security (live)"] = "viewer/worker mutations refused=14/14, raw tokens in DB/log=0"
    finally:
        server.kill()


def _headers_everywhere(http: httpx.Client, token: str) -> None:
    answers = {
        "200 json": http.get(f"{API}/studies", headers=_h(token)),
        "401": http.get(f"{API}/studies"),
        "403": http.post(f"{API}/tokens", json={"role": "viewer"}, headers=_h(token)),
        "404": http.get(f"{API}/studies/nope", headers=_h(token)),
        "422": http.get(f"{API}/studies?limit=-1", headers=_h(token)),
        "413": http.post(f"{API}/studies", content=b"x" * 20000, headers=_h(token)),
        "openapi": http.get("/openapi.json"),
        "healthz": http.get("/healthz"),
        "dashboard login": http.get("/dashboard/login"),
    }
    for what, resp in answers.items():
        _check_headers(resp, what)
    assert answers["413"].status_code == 413


def _url_tokens_ignored(http: httpx.Client, token: str) -> None:
    """A token in the query string is never accepted (it would land in access logs)."""
    decoy = "hpo_decoy_" + hashlib.sha256(token.encode()).hexdigest()[:16]
    for param in ("token", "access_token", "api_key"):
        resp = http.get(f"{API}/studies", params={param: decoy})
        assert resp.status_code == 401, (param, resp.status_code)


def _dashboard_login(http: httpx.Client, token: str) -> None:
    resp = http.post(
        "/dashboard/login",
        data={"token": token, "next": "/dashboard/"},
        headers={"origin": str(http.base_url).rstrip("/")},
    )
    assert resp.status_code == 303, resp.text[:300]
    assert token not in resp.headers["location"]
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie, cookie
    http.cookies.set("hpo_token", token)
    page = http.get("/dashboard/")
    http.cookies.clear()
    assert page.status_code == 200 and token not in page.text
    _check_headers(page, "dashboard page")
    csp = page.headers.get("content-security-policy", "")
    assert "default-src" in csp and "script-src 'self'" in csp, csp


def _no_raw_tokens_in_sqlite(db: Path, secrets: list[str]) -> None:
    for path in [db, *db.parent.glob(db.name + "-*")]:  # the file, its WAL and SHM
        blob = path.read_bytes()
        assert not [s for s in secrets if s.encode() in blob], f"raw token in {path.name}"
    _no_raw_tokens_in_rows(f"sqlite:///{db}", secrets)


def _no_raw_tokens_in_rows(url: str, secrets: list[str]) -> None:
    """Every row of every table, as text: no raw token; each token's SHA-256 is there."""
    engine = create_engine(url)
    try:
        dump = []
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                dump += [repr(tuple(r)) for r in conn.execute(text(f'SELECT * FROM "{table}"'))]
    finally:
        engine.dispose()
    blob = "\n".join(dump)
    for secret in secrets:
        assert secret not in blob and secret.removeprefix("hpo_") not in blob
        assert hashlib.sha256(secret.encode()).hexdigest() in blob


def test_tokens_are_stored_hashed_in_every_backend(client, tokens: Tokens, ctx, db_url) -> None:
    minted = client.post(
        f"{API}/tokens", json={"role": "worker", "name": "box"}, headers=_h(tokens.admin)
    )
    assert minted.status_code == 201, minted.text
    secrets = [tokens.admin, tokens.worker, tokens.viewer, minted.json()["token"]]
    _no_raw_tokens_in_rows(db_url, secrets)
    if db_url.startswith("postgresql"):
        _no_raw_tokens_in_pg_dump(db_url, secrets)


def _no_raw_tokens_in_pg_dump(url: str, secrets: list[str]) -> None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump")) or [shutil.which("pg_dump")]
    if not found or not found[-1]:
        return  # the row dump above already covered every table
    parts = make_url(url)
    argv = [found[-1], "-h", parts.host or "127.0.0.1", "-p", str(parts.port or 5432)]
    argv += ["-U", parts.username or "postgres", "--no-password", "-d", parts.database or ""]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:  # e.g. a client older than the server: rows were checked
        return
    assert "hpo_tokens" in done.stdout
    assert not [s for s in secrets if s in done.stdout], "raw token in pg_dump"


def test_token_comparison_is_constant_time() -> None:
    source = pyinspect.getsource(auth.authenticate)
    assert re.search(r"\b(hmac|secrets)\.compare_digest\(", source), source
    # The SQL lookup by hash is indexed; no Python-level == on secrets or digests.
    assert not re.search(r"record\.token_hash\s*[!=]=|\braw\s*[!=]=|digest\s*[!=]=", source)
    assert auth.hash_token("x") == hashlib.sha256(b"x").hexdigest()


def test_login_page_has_a_csp(client) -> None:
    """The sign-in page (a token is pasted there) carries the dashboard's CSP too."""
    page = client.get("/dashboard/login")
    assert page.status_code == 200
    csp = page.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "script-src 'self'" in csp, csp
    assert "frame-ancestors 'none'" in csp
