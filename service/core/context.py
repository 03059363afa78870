"""The app's long-lived services, built once by create_app and shared by handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.artifacts.store import ArtifactStore, open_store, store_location
from service.core.config import Settings
from service.core.db import Database
from service.core.metrics import Metrics
from service.fleet.registry import TouchThrottle
from service.storage.optuna_store import OptunaStore


@dataclass
class AppContext:
    """Settings, database, Optuna storage, metrics and artifact store of one app, and
    what it remembers between requests (``touches``: liveness writes per worker)."""

    settings: Settings
    db: Database
    store: OptunaStore
    metrics: Metrics
    artifacts: ArtifactStore
    touches: TouchThrottle = field(default_factory=TouchThrottle)

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        return cls(
            settings=settings,
            db=Database(settings),
            store=OptunaStore(
                settings.database_url, settings.db_pool_size, settings.db_max_overflow
            ),
            metrics=Metrics(),
            artifacts=open_store(store_location(settings.artifact_store, settings.database_url)),
        )

    def close(self) -> None:
        self.store.dispose()
        self.db.dispose()
