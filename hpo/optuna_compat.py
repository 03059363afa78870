"""Optuna's storage interface over a lease, and :class:`OptunaTrial` (imports Optuna).

:class:`LeaseStorage` is an ``optuna.storages.BaseStorage`` that answers the reads of
Optuna's ``Study`` from the server (``GET /leases/{id}/study`` and ``.../trials``,
fetched once and kept for the trial's lifetime) and the trial's own state from the
trial itself, so ``trial.study.best_value`` and ``trial.study.trials`` read as in
Optuna, with the running trial as current as it is. The study is read-only:
creating trials or studies, or writing other trials, raises :class:`ReadOnlyStudy`
with what to use instead. The trial's own writes go through the trial (user
attributes with its result; ``constraints:`` system attributes at once).

:class:`OptunaTrial` is :class:`hpo.Trial` that is also an ``optuna.trial.Trial``, so
code that checks ``isinstance(trial, optuna.trial.Trial)`` (``upload_artifact``,
integration callbacks) takes it. Workers build their trials with
:func:`hpo.trial.new_trial`, which uses it when Optuna is installed.
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import tempfile
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_view import ARTIFACT_PREFIX, FrozenTrialBody, StudyViewBody
from hpo.trial import Trial


class ReadOnlyStudy(RuntimeError):
    """``trial.study`` is a view: this write is not possible through it."""


class OptunaTrial(Trial, optuna.trial.Trial):  # type: ignore[misc, override]  # see below
    """:class:`hpo.Trial`, recognised by Optuna as one of its trials.

    Optuna's ``__init__`` sets ``study``, ``storage`` and ``_trial_id`` as attributes;
    here they are :class:`hpo.Trial`'s read-only properties (its ``__init__`` is never
    called), which mypy reports as an override of writeable attributes."""


def read_only_sampler() -> optuna.samplers.BaseSampler:
    """The view's sampler: never used (the server samples), cheap to build."""
    return optuna.samplers.RandomSampler()


def to_distribution(dist: dict[str, Any]) -> BaseDistribution:
    """Our distribution dict (``{"type": "float", "low": ...}``) as Optuna's."""
    kind = dist.get("type")
    if kind == "categorical":
        return CategoricalDistribution(choices=list(dist["choices"]))
    if kind == "int":
        step = int(dist.get("step") or 1)
        return IntDistribution(
            int(dist["low"]), int(dist["high"]), log=bool(dist.get("log")), step=step
        )
    grid = dist.get("step")
    return FloatDistribution(
        float(dist["low"]), float(dist["high"]), log=bool(dist.get("log")), step=grid
    )


def to_frozen(body: FrozenTrialBody) -> FrozenTrial:
    """A trial as it came over the wire, as Optuna's ``FrozenTrial``."""
    values = None if body.values is None else [_number(v) for v in body.values]
    return FrozenTrial(
        number=body.number,
        state=TrialState[body.state],
        value=None,
        values=values,
        datetime_start=body.datetime_start,
        datetime_complete=body.datetime_complete,
        params=dict(body.params),
        distributions={k: json_to_distribution(v) for k, v in body.distributions.items()},
        user_attrs=dict(body.user_attrs),
        system_attrs=dict(body.system_attrs),
        intermediate_values={s: _number(v) for s, v in body.intermediate_values.items()},
        trial_id=body.trial_id,
    )


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


class LeaseStorage(BaseStorage):
    """Optuna's storage interface for one leased trial (see the module docstring)."""

    def __init__(self, client: Any, trial: Trial) -> None:
        self._client, self._trial = client, trial
        self._lease_id = trial.spec.lease_id
        self._meta: StudyViewBody | None = None
        self._trials: list[FrozenTrial] | None = None

    # ------------------------------------------------------------------ what is fetched

    @property
    def meta(self) -> StudyViewBody:
        if self._meta is None:
            self._meta = self._client.lease_study(self._lease_id)
        return self._meta

    def _all(self) -> list[FrozenTrial]:
        if self._trials is None:
            body = self._client.lease_study_trials(self._lease_id)
            self._trials = [to_frozen(t) for t in body.trials]
        own = self._trial._trial_id
        return [self.own_trial() if t._trial_id == own else t for t in self._trials]

    def own_trial(self) -> FrozenTrial:
        """The leased trial as it stands now (running)."""
        trial = self._trial
        return FrozenTrial(
            number=trial.number,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=trial.datetime_start,
            datetime_complete=None,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=trial.user_attrs,
            system_attrs=trial.system_attrs,
            intermediate_values=trial.intermediate_values,
            trial_id=trial._trial_id,
        )

    def _check_study(self, study_id: int) -> None:
        if study_id != self.meta.study_id:
            raise KeyError(f"study {study_id}: a trial sees only its own study")

    # ------------------------------------------------------------------ study reads

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name != self.meta.study_name:
            raise KeyError(f"study {study_name!r}: a trial sees only its own study")
        return self.meta.study_id

    def get_study_name_from_id(self, study_id: int) -> str:
        self._check_study(study_id)
        return self.meta.study_name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        self._check_study(study_id)
        return [StudyDirection[d] for d in self.meta.directions]

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        self._check_study(study_id)
        return dict(self.meta.user_attrs)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        self._check_study(study_id)
        return dict(self.meta.system_attrs)

    def get_all_studies(self) -> list[FrozenStudy]:
        meta = self.meta
        directions = self.get_study_directions(meta.study_id)
        return [
            FrozenStudy(
                study_name=meta.study_name,
                direction=None,
                directions=directions,
                user_attrs=dict(meta.user_attrs),
                system_attrs=dict(meta.system_attrs),
                study_id=meta.study_id,
            )
        ]

    # ------------------------------------------------------------------ trial reads

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        self._check_study(study_id)
        for trial in self._all():
            if trial.number == trial_number:
                return trial._trial_id
        raise KeyError(f"no trial number {trial_number} in study {self.meta.study_name!r}")

    def get_trial(self, trial_id: int) -> FrozenTrial:
        if trial_id == self._trial._trial_id:
            return self.own_trial()
        for trial in self._all():
            if trial._trial_id == trial_id:
                return trial
        raise KeyError(f"no trial with id {trial_id} in study {self.meta.study_name!r}")

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        self._check_study(study_id)
        trials = [t for t in self._all() if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return dict(self.get_trial(trial_id).system_attrs)

    # ------------------------------------------------------------------ the trial's writes

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._own(trial_id, "set_trial_user_attr").set_user_attr(key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        trial = self._own(trial_id, "set_trial_system_attr")
        if key.startswith(ARTIFACT_PREFIX) and key[len(ARTIFACT_PREFIX) :] in trial.uploaded:
            return  # upload_artifact's metadata: the server stored it with the file
        trial.set_system_attr_now(key, value)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._own(trial_id, "set_trial_intermediate_value").report(intermediate_value, step)

    def _own(self, trial_id: int, what: str) -> Trial:
        if trial_id != self._trial._trial_id:
            raise ReadOnlyStudy(f"{what}: a trial writes only its own attributes")
        return self._trial

    # ------------------------------------------------------------------ refused writes

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        raise ReadOnlyStudy("trial.study is read-only: create studies with hpo.Client")

    def delete_study(self, study_id: int) -> None:
        raise ReadOnlyStudy("trial.study is read-only: delete studies with hpo.Client")

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        raise ReadOnlyStudy("trial.study is read-only: set study attributes on the server")

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        raise ReadOnlyStudy("trial.study is read-only: set study attributes on the server")

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        raise ReadOnlyStudy(
            "trial.study is read-only: workers lease the study's trials; to ask and tell "
            "by hand use hpo.Client(...).study(name)"
        )

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any
    ) -> None:
        raise ReadOnlyStudy("set_trial_param: use trial.suggest_* (the server samples)")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        raise ReadOnlyStudy(
            "set_trial_state_values: the worker finishes the trial with what the objective "
            "returns (raise optuna.TrialPruned to prune)"
        )


class LeaseArtifactStore:
    """Optuna's artifact-store protocol over the lease: ``trial.artifact_store``.

    ``optuna.artifacts.upload_artifact(artifact_store=trial.artifact_store,
    file_path=..., study_or_trial=trial)`` stores the file on the server's artifact
    store, under the id Optuna chose, with the metadata Optuna writes.
    """

    def __init__(self, client: Any, trial: Trial) -> None:
        self._client, self._trial = client, trial

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Upload ``content_body`` (a file Optuna opened, or any readable stream)."""
        name = getattr(content_body, "name", None)
        path = Path(name) if isinstance(name, str) and Path(name).is_file() else None
        with contextlib.ExitStack() as stack:
            if path is None:  # not a file on disk: spool it first (uploads stream a path)
                spool = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".upload"))
                shutil.copyfileobj(content_body, spool)
                spool.flush()
                path = Path(spool.name)
            filename = Path(name).name if isinstance(name, str) else artifact_id
            self._trial.upload_artifact(path, filename=filename, artifact_id=artifact_id)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """The artifact's bytes (downloaded to a temporary file, hash-checked)."""
        folder = Path(tempfile.mkdtemp(prefix="hpo-artifact-"))
        path = self._client.download_artifact(artifact_id, folder / "content")
        return path.open("rb")  # type: ignore[no-any-return]

    def remove(self, artifact_id: str) -> None:
        raise ReadOnlyStudy(
            f"artifact {artifact_id}: a trial does not delete artifacts (an admin does: "
            "hpo artifact delete, or the study's retention)"
        )
