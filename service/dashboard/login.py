"""Dashboard sign-in: paste a token once, get an HttpOnly, SameSite=Strict cookie.

The token never appears in a URL or a page: the login form posts it, the
server checks it and answers with the ``hpo_token`` cookie (which the API's
auth dependency also accepts), and logout clears it. Both posts refuse
cross-site requests (Origin / Sec-Fetch-Site), so no other site can sign a
browser in or out. With ``settings.auth`` off nobody needs to sign in.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hpo.protocol import DASHBOARD_PREFIX
from service.api.deps import AUTH_COOKIE
from service.core.auth import ANONYMOUS_ADMIN, Principal, authenticate
from service.core.errors import Forbidden, Unauthorized
from service.dashboard.state import DashboardDep

PREFIX = DASHBOARD_PREFIX
router = APIRouter(prefix=PREFIX, include_in_schema=False)
MAX_FORM_BYTES = 4096


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def request_token(request: Request) -> str | None:
    """The bearer header (API clients) or the dashboard cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(AUTH_COOKIE)


def _check_token(dash: DashboardDep, token: str | None) -> Principal:
    with dash.ctx.db.session() as session:
        return authenticate(session, token)


def page_principal(request: Request, dash: DashboardDep) -> Principal:
    """Who is looking at a page; redirects to the login page when nobody valid is."""
    if not dash.ctx.settings.auth:
        return ANONYMOUS_ADMIN
    try:
        return _check_token(dash, request_token(request))
    except Unauthorized as exc:
        raise LoginRequired(request.url.path) from exc


PageUser = Annotated[Principal, Depends(page_principal)]


def login_redirect(_: Request, exc: Exception) -> Response:
    """Answer LoginRequired with a redirect to the sign-in page."""
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"{PREFIX}/login?next={quote(exc.next_path, safe='/')}", 303)


def safe_next(value: str | None) -> str:
    """Only local dashboard paths: never another host (``//evil``) or scheme."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
    ):
        return value
    return PREFIX + "/"


def check_same_origin(request: Request) -> None:
    """Refuse cross-site posts (Sec-Fetch-Site, Origin)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != expected:
            raise Forbidden("cross-origin request refused")


#: Every dashboard page, the sign-in page included (a token is pasted there).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _render(dash: DashboardDep, request: Request, error: str | None, next_path: str, status: int):
    context = {"error": error, "next": next_path, "auth": True, "page": "login"}
    response = dash.templates.TemplateResponse(request, "login.html", context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, dash: DashboardDep, next: str | None = None) -> Response:
    """The sign-in form (a redirect when auth is off)."""
    if not dash.ctx.settings.auth:
        return RedirectResponse(safe_next(next), 303)
    return _render(dash, request, None, safe_next(next), 200)


@router.post("/login")
async def login(request: Request, dash: DashboardDep) -> Response:
    check_same_origin(request)
    body = await request.body()
    form = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    next_path = safe_next((form.get("next") or [None])[0])
    try:
        await run_in_threadpool(_check_token, dash, token)
    except Unauthorized:
        return _render(dash, request, "That token is not valid (or was revoked).", next_path, 401)
    response = RedirectResponse(next_path, 303)
    response.set_cookie(
        AUTH_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Clear the cookie and go to the sign-in page."""
    check_same_origin(request)
    response = RedirectResponse(f"{PREFIX}/login", 303)
    response.delete_cookie(AUTH_COOKIE, path="/", httponly=True, samesite="strict")
    return response
