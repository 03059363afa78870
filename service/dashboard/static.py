"""Static assets: the dashboard's own files and plotly.js.

No CDN. ``plotly.min.js`` is plotly.js's *strict* build, vendored in
``static/vendor/`` (its README says why: the regular bundle that the Python
``plotly`` package ships needs ``'unsafe-eval'`` for its WebGL charts, which the
dashboard's Content-Security-Policy refuses). URLs carry a hash of the file so
browsers may cache them.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hpo.protocol import DASHBOARD_PREFIX
from service.core.errors import NotFound

HERE = Path(__file__).parent / "static"
PLOTLY_JS = HERE / "vendor" / "plotly-strict.min.js"
FILES = {
    "lib.js": (HERE / "lib.js", "text/javascript"),
    "app.js": (HERE / "app.js", "text/javascript"),
    "style.css": (HERE / "style.css", "text/css"),
    "plotly.min.js": (PLOTLY_JS, "text/javascript"),
}
router = APIRouter(prefix=f"{DASHBOARD_PREFIX}/static", include_in_schema=False)


@lru_cache(maxsize=16)
def _digest(name: str) -> str:
    return hashlib.sha256(FILES[name][0].read_bytes()).hexdigest()[:12]


def asset_url(name: str) -> str:
    """The versioned URL of an asset."""
    return f"{DASHBOARD_PREFIX}/static/{name}?v={_digest(name)}"


@lru_cache(maxsize=16)
def _bodies(name: str) -> tuple[bytes, bytes]:
    """(plain, gzip) bytes of an asset, compressed once: plotly.min.js is 5.2 MB plain and
    about 1.6 MB gzipped, which matters on a real network, not on loopback."""
    raw = FILES[name][0].read_bytes()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)


@router.get("/{name}")
def asset(name: str, request: Request) -> Response:
    """An asset, gzipped when the client accepts it."""
    if name not in FILES:
        raise NotFound(f"no asset {name!r}")
    plain, packed = _bodies(name)
    headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type=FILES[name][1], headers=headers)
    return Response(plain, media_type=FILES[name][1], headers=headers)
