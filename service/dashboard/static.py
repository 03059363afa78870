"""Static assets: the dashboard's own files and plotly.js.

No CDN. ``plotly.min.js`` is plotly.js's *strict* build and ``plotly-cartesian.min.js``
its cartesian partial bundle (``bundles.py``: which page loads which), vendored in
``static/vendor/`` (its README says why: the regular bundle that the Python
``plotly`` package ships needs ``'unsafe-eval'`` for its WebGL charts, which the
dashboard's Content-Security-Policy refuses). URLs carry a hash of the file, and
a request by that URL is answered ``immutable`` for a year; each file is compressed
once per process (brotli, gzip) and served in the best coding the browser accepts.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

import brotli
from fastapi import APIRouter, Request
from fastapi.responses import Response

from hpo.protocol import DASHBOARD_PREFIX
from service.core.errors import NotFound

HERE = Path(__file__).parent / "static"
PLOTLY_JS = HERE / "vendor" / "plotly-strict.min.js"
#: The 2-D partial bundle most charts need (``bundles.py`` says which chart loads which).
PLOTLY_CARTESIAN_JS = HERE / "vendor" / "plotly-cartesian.min.js"
FILES = {
    "lib.js": (HERE / "lib.js", "text/javascript"),
    "app.js": (HERE / "app.js", "text/javascript"),
    "style.css": (HERE / "style.css", "text/css"),
    "plotly.min.js": (PLOTLY_JS, "text/javascript"),
    "plotly-cartesian.min.js": (PLOTLY_CARTESIAN_JS, "text/javascript"),
}
router = APIRouter(prefix=f"{DASHBOARD_PREFIX}/static", include_in_schema=False)


@lru_cache(maxsize=16)
def _digest(name: str) -> str:
    return hashlib.sha256(FILES[name][0].read_bytes()).hexdigest()[:12]


def asset_url(name: str) -> str:
    """The versioned URL of an asset."""
    return f"{DASHBOARD_PREFIX}/static/{name}?v={_digest(name)}"


#: Content codings served, best first (brotli is 17 % smaller than gzip on plotly.js).
ENCODINGS = ("br", "gzip")
#: A versioned URL (``?v=<digest>``) names one content for ever; others are revalidated.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"


@lru_cache(maxsize=32)
def _body(name: str, coding: str) -> bytes:
    """An asset's bytes in a content coding (``identity``, ``br``, ``gzip``), compressed
    once per process and coding, when first asked for: plotly.min.js is 5.2 MB plain,
    1.3 MB brotli, 1.6 MB gzip."""
    raw = FILES[name][0].read_bytes()
    if coding == "br":
        return bytes(brotli.compress(raw, quality=9))  # 0.5 s for plotly.js; 11 takes 10 s
    if coding == "gzip":
        return gzip.compress(raw, compresslevel=6, mtime=0)
    return raw


#: Compressed at start-up (``precompress``): what a study page's first chart waits for.
#: The strict build (5.2 MB, 0.5 s of brotli) only when first asked for.
PRECOMPRESSED = ("lib.js", "app.js", "style.css", "plotly-cartesian.min.js")


def precompress() -> None:
    """Compress the files of :data:`PRECOMPRESSED` in every coding (the dashboard's
    start-up thread calls it), so that a browser's first visit does not wait for it."""
    for name in PRECOMPRESSED:
        for coding in ENCODINGS:
            _body(name, coding)


def _coding(accept_encoding: str) -> str:
    """The best coding the client accepts (``q=0`` refuses one)."""
    offered = {}
    for part in accept_encoding.lower().split(","):
        token, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            offered[token.strip()] = float(q)
        except ValueError:
            continue
    return next((c for c in ENCODINGS if offered.get(c, 0) > 0), "identity")


@router.get("/{name}")
def asset(name: str, request: Request) -> Response:
    """An asset, brotli- or gzip-encoded when the client accepts it; immutable when asked
    for by its versioned URL, else revalidated by its ETag (304 when unchanged)."""
    if name not in FILES:
        raise NotFound(f"no asset {name!r}")
    digest = _digest(name)
    etag = f'"{digest}"'
    versioned = request.query_params.get("v") == digest
    headers = {
        "Cache-Control": IMMUTABLE if versioned else REVALIDATE,
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    coding = _coding(request.headers.get("accept-encoding", ""))
    if coding != "identity":
        headers["Content-Encoding"] = coding
    return Response(_body(name, coding), media_type=FILES[name][1], headers=headers)
