"""401/403 matrix over every route of the app (found by walking ``app.routes``).

* every mutating route (POST/DELETE/PATCH/PUT) under the API answers 401
  without a token and 403 for each role it does not allow (viewers never mutate);
* every read under the API answers 401 without a token;
* the roles of the protocol, worker, study and token routes are pinned below,
  so that a dependency swapped by mistake fails here;
* mutating routes outside the API are public only when listed in PUBLIC_MUTATIONS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.routing import APIRoute, iter_route_contexts

from tests.conftest import Tokens

API = "/api/v1"
MUTATING = {"POST", "DELETE", "PATCH", "PUT"}
#: Mutations that are public by design (the dashboard's own login form).
PUBLIC_MUTATIONS = {("POST", "/dashboard/login"), ("POST", "/dashboard/logout")}
WORKER = ("worker",)
ADMIN: tuple[str, ...] = ()
#: What a worker does with its lease, each a POST to ``/leases/{lease_id}/ACTION``.
LEASE_ACTIONS = ("heartbeat", "report", "complete", "fail")
#: A study's state changes, each a POST to ``/studies/{study}/ACTION``.
STUDY_ACTIONS = ("pause", "resume", "stop")
#: Roles (besides admin) allowed on each route we pin.
PINNED: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", f"{API}/trials/lease"): WORKER,
    **{("POST", f"{API}/leases/{{lease_id}}/{action}"): WORKER for action in LEASE_ACTIONS},
    ("POST", f"{API}/workers/register"): WORKER,
    ("GET", f"{API}/workers"): ("viewer", "worker"),
    ("GET", f"{API}/workers/{{worker_id}}"): ("viewer", "worker"),
    ("POST", f"{API}/studies"): ADMIN,
    **{("POST", f"{API}/studies/{{study}}/{action}"): ADMIN for action in STUDY_ACTIONS},
    ("DELETE", f"{API}/studies/{{study}}"): ADMIN,
    ("POST", f"{API}/tokens"): ADMIN,
    ("DELETE", f"{API}/tokens/{{token_id}}"): ADMIN,
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    roles: tuple[str, ...] | None  # None: no role dependency (public)

    @property
    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", "1", self.path)


def _roles(dependant) -> tuple[str, ...] | None:  # type: ignore[no-untyped-def]
    """The roles of the ``service.api.deps._role_dep`` dependency, if the route has one."""
    for sub in dependant.dependencies:
        call = sub.call
        if getattr(call, "__qualname__", "").startswith("_role_dep."):
            return tuple(call.__closure__[0].cell_contents)
        found = _roles(sub)
        if found is not None:
            return found
    return None


def endpoints(app) -> list[Endpoint]:  # type: ignore[no-untyped-def]
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        if not isinstance(route, APIRoute) or context.path is None:
            continue
        for method in sorted(context.methods or ()):
            out.append(Endpoint(method, context.path, _roles(route.dependant)))
    return out


def guarded_mutations(app) -> list[Endpoint]:  # type: ignore[no-untyped-def]
    """The mutating routes that have a role dependency."""
    return [e for e in endpoints(app) if e.method in MUTATING and e.roles is not None]


def call(client, endpoint: Endpoint, token: str | None = None):  # type: ignore[no-untyped-def]
    """``endpoint`` with an empty JSON body, as ``token`` (None: without a token)."""
    headers = Tokens.header(token) if token is not None else {}
    return client.request(endpoint.method, endpoint.url, json={}, headers=headers)


def test_routes_were_found(app) -> None:
    found = {(e.method, e.path) for e in endpoints(app)}
    missing = set(PINNED) - found
    assert not missing, f"pinned routes not in the app: {sorted(missing)}"


def test_pinned_roles(app) -> None:
    for endpoint in endpoints(app):
        expected = PINNED.get((endpoint.method, endpoint.path))
        if expected is not None:
            assert endpoint.roles == expected, endpoint


def test_no_public_mutations(app) -> None:
    for endpoint in endpoints(app):
        if endpoint.method in MUTATING and endpoint.roles is None:
            assert (endpoint.method, endpoint.path) in PUBLIC_MUTATIONS, endpoint


def test_mutations_need_a_token_and_the_right_role(app, client, tokens: Tokens) -> None:
    role_tokens = {"viewer": tokens.viewer, "worker": tokens.worker}
    checked = 0
    for endpoint in guarded_mutations(app):
        anonymous = call(client, endpoint)
        assert anonymous.status_code == 401, (endpoint, anonymous.text)
        for role, token in role_tokens.items():
            if role in endpoint.roles:
                continue
            denied = call(client, endpoint, token)
            assert denied.status_code == 403, (endpoint, role, denied.text)
            assert role in denied.json()["detail"]
        checked += 1
    assert checked >= len([k for k in PINNED if k[0] in MUTATING])


def test_allowed_roles_get_past_auth(app, client, tokens: Tokens) -> None:
    role_tokens = {"admin": tokens.admin, "worker": tokens.worker}
    for endpoint in guarded_mutations(app):
        for role, token in role_tokens.items():
            if role != "admin" and role not in endpoint.roles:
                continue
            answer = call(client, endpoint, token)
            assert answer.status_code not in (401, 403), (endpoint, role, answer.text)


def test_reads_need_a_token(app, client) -> None:
    for endpoint in endpoints(app):
        if endpoint.method == "GET" and endpoint.path.startswith(API):
            assert endpoint.roles is not None, endpoint
            answer = client.get(endpoint.url)
            assert answer.status_code == 401, (endpoint, answer.text)
