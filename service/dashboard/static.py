"""Static assets: the dashboard's own files and plotly.js from the installed plotly package.

No CDN: ``plotly.min.js`` is served from ``plotly/package_data``. URLs carry a
version (plotly's version, or a hash of the file) so browsers may cache them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import plotly
from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from service.errors import NotFound

HERE = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
FILES = {
    "lib.js": (HERE / "lib.js", "text/javascript"),
    "app.js": (HERE / "app.js", "text/javascript"),
    "style.css": (HERE / "style.css", "text/css"),
    "plotly.min.js": (PLOTLY_JS, "text/javascript"),
}
router = APIRouter(prefix="/dashboard/static", include_in_schema=False)


@lru_cache(maxsize=16)
def _digest(name: str) -> str:
    if name == "plotly.min.js":
        return plotly.__version__
    return hashlib.sha256(FILES[name][0].read_bytes()).hexdigest()[:12]


def asset_url(name: str) -> str:
    return f"/dashboard/static/{name}?v={_digest(name)}"


@router.get("/{name}")
def asset(name: str) -> Response:
    if name not in FILES:
        raise NotFound(f"no asset {name!r}")
    path, media_type = FILES[name]
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )
