"""Server settings: one pydantic-settings object built at start-up.

Every value can be set from the environment with the ``HPO_`` prefix, e.g.
``HPO_DATABASE_URL=postgresql+psycopg://user@db/hpo``. The object is passed
into :func:`service.app.create_app`; nothing reads the environment later.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: heartbeat/report refresh a worker's ``last_seen_at`` at most this often per process
TOUCH_EVERY_S = 5.0


class Settings(BaseSettings):
    """Configuration of one server process."""

    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///hpo.db",
        description="SQLAlchemy URL; default is a SQLite file in the working directory",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    auth: bool = Field(default=True, description="require bearer tokens")
    token_file: Path = Field(
        default=Path("hpo-tokens.json"),
        description="where first start writes the bootstrap admin/worker tokens (mode 0600)",
    )
    auto_migrate: bool = Field(default=True, description="upgrade the schema on start")
    lease_ttl_s: float = Field(default=60.0, gt=0, description="lease lifetime without heartbeat")
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    reaper_interval_s: float = Field(default=5.0, gt=0)
    orphan_grace_s: float = Field(
        default=120.0, gt=0, description="age after which a half-created trial is cleaned up"
    )
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    worker_timeout_s: float = Field(
        default=120.0, gt=0, description="a worker not seen for this long is shown as gone"
    )
    worker_forget_s: float = Field(
        default=86400.0, gt=0, description="a gone worker is removed from the registry after this"
    )
    artifact_store: str = Field(
        default="",
        description="where checkpoints, models and files go: file:///folder or "
        "s3://bucket[/prefix] (AWS_* variables; AWS_ENDPOINT_URL for MinIO); empty: the "
        "folder hpo-artifacts beside the SQLite file (or the working directory)",
    )
    max_artifact_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="larger artifact uploads get 413"
    )
    proposal_pool: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="proposals drawn ahead per running study (0: sample on the lease "
        "request); grid, QMC, brute-force and define-by-run studies are never pooled",
    )
    proposal_stale_tells: int = Field(
        default=0,
        ge=0,
        description="a proposal drawn more than this many tells ago is re-drawn, never "
        "handed out (0: twice the larger of the pool depth and the study's running trials)",
    )
    pool_refill_interval_s: float = Field(
        default=0.05, gt=0, description="how often the pool refill looks for studies to top up"
    )
    lease_request_ttl_s: float = Field(
        default=3600.0, gt=0, description="how long a lease request id's answer is kept"
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Cross-field checks: a bad combination is refused at start-up, naming the fields."""
        problems = self.inconsistencies()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def inconsistencies(self) -> list[str]:
        """What is wrong with the combination of values (empty when nothing)."""
        found = []
        if self.heartbeat_interval_s * 3 > self.lease_ttl_s:
            found.append(
                f"heartbeat_interval_s ({self.heartbeat_interval_s:g}) must be at most "
                f"lease_ttl_s / 3 ({self.lease_ttl_s / 3:g}): three heartbeats per lease"
            )
        if self.worker_timeout_s <= max(self.heartbeat_interval_s, TOUCH_EVERY_S):
            found.append(
                f"worker_timeout_s ({self.worker_timeout_s:g}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s:g}) and the {TOUCH_EVERY_S:g} s liveness throttle"
            )
        if self.worker_forget_s < self.worker_timeout_s:
            found.append(
                f"worker_forget_s ({self.worker_forget_s:g}) must be at least "
                f"worker_timeout_s ({self.worker_timeout_s:g})"
            )
        if self.is_sqlite and self.workers > 1:
            found.append(
                f"workers ({self.workers}) must be 1 with a SQLite database_url: "
                "SQLite is served by one process (use PostgreSQL for more)"
            )
        return found

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def host_is_loopback(self) -> bool:
        """True when the bind address is only reachable from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
