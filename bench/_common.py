"""Pieces the benchmark scripts share: the service settings they run the app with and
how a finished report is shown and kept."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.core.config import Settings


def service_settings(workdir: Path) -> Settings:
    """The app's settings for a benchmark: a SQLite file and tokens in ``workdir``, with
    leases and the reaper slow enough to stay out of the measurement."""
    from service.core.config import Settings

    return Settings(
        database_url=f"sqlite:///{workdir / 'hpo.db'}",
        auth=True,
        token_file=workdir / "tokens.json",
        lease_ttl_s=600.0,
        reaper_interval_s=3600.0,
    )


def publish(text: str, out: str | Path | None) -> None:
    """Print the report; when ``out`` is given, also write it there (folders made)."""
    print(text, end="" if text.endswith("\n") else "\n")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
