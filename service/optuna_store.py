"""Optuna's RDB storage on the service's database, and cached Study objects.

Studies are genuine Optuna studies: any Optuna client can
``optuna.load_study(study_name=..., storage=URL)`` them. The server keeps one
RDBStorage per app and one ``optuna.Study`` per study (sampler state, such as
a seeded RNG, lives there), each guarded by a lock for ask/tell.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import optuna

from service.db import engine_kwargs
from service.spec import StudySpec, make_pruner, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class CachedStudy:
    study: optuna.Study
    lock: threading.Lock
    spec: StudySpec


class OptunaStore:
    """The app's Optuna storage plus a cache of loaded studies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
        self._studies: dict[int, CachedStudy] = {}
        self._lock = threading.Lock()

    def create(self, spec: StudySpec, seed: int) -> optuna.Study:
        """Create the Optuna study for ``spec`` (raises DuplicatedStudyError if taken)."""
        return optuna.create_study(
            storage=self.storage,
            study_name=spec.name,
            directions=spec.study_directions,
            sampler=make_sampler(spec, seed),
            pruner=make_pruner(spec),
        )

    def get(self, study_id: int, name: str, spec: StudySpec, seed: int) -> CachedStudy:
        """The cached Study for ``study_id``, loaded on first use."""
        with self._lock:
            cached = self._studies.get(study_id)
            if cached is None:
                study = optuna.load_study(
                    study_name=name,
                    storage=self.storage,
                    sampler=make_sampler(spec, seed),
                    pruner=make_pruner(spec),
                )
                cached = CachedStudy(study=study, lock=threading.Lock(), spec=spec)
                self._studies[study_id] = cached
            return cached

    def forget(self, study_id: int) -> None:
        """Drop a cached study (after delete)."""
        with self._lock:
            self._studies.pop(study_id, None)

    def delete(self, name: str) -> None:
        optuna.delete_study(study_name=name, storage=self.storage)

    def dispose(self) -> None:
        self.storage.engine.dispose()
