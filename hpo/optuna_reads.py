"""Reading a service study as Optuna's ``Study`` reads: the base of
:class:`hpo.optuna_study.ClientStudy` (imports Optuna).

Identity (``study_name``, ``directions``, ``user_attrs``) comes from the study's
summary and spec; trials (``trials``, ``get_trials``, ``best_trial``,
``best_trials``, ``trials_dataframe``) are Optuna's ``FrozenTrial`` objects built
from the REST API's trial listing and trial detail (:mod:`hpo.optuna_frozen`),
over every trial of the study, whoever ran it. A finished trial is fetched once
and kept; an unfinished one is fetched again on each read.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Container, Iterable
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.client import Client, study_path
from hpo.optuna_frozen import frozen_trial, optuna_state
from hpo.spec import StudySpec
from hpo.transport import Call

#: Optuna's default columns of ``trials_dataframe``.
DATAFRAME_ATTRS = (
    "number",
    "value",
    "datetime_start",
    "datetime_complete",
    "duration",
    "params",
    "user_attrs",
    "system_attrs",
    "state",
)


class StudyReads:
    """A study's identity and trials, as Optuna's ``Study`` gives them."""

    def __init__(self, client: Client, name: str) -> None:
        self._client, self._name = client, name
        self._spec: StudySpec | None = None
        self._finished: dict[int, FrozenTrial] = {}  # finished trials, fetched once

    # ------------------------------------------------------------------ the study

    @property
    def study_name(self) -> str:
        return self._name

    @property
    def spec(self) -> StudySpec:
        """The study's spec (read once)."""
        if self._spec is None:
            self._spec = StudySpec.model_validate(self._client.get_study(self._name).spec)
        return self._spec

    @property
    def directions(self) -> list[StudyDirection]:
        return [StudyDirection[d.upper()] for d in self.spec.study_directions]

    @property
    def direction(self) -> StudyDirection:
        if self._is_multi_objective():
            raise RuntimeError(
                "A single direction cannot be retrieved from a multi-objective study. "
                "Consider using Study.directions to retrieve a list containing all directions."
            )
        return self.directions[0]

    @property
    def metric_names(self) -> list[str] | None:
        return None  # Optuna's set_metric_names; the service sets none

    @property
    def user_attrs(self) -> dict[str, Any]:
        """The Optuna study's user attributes (hpo_spec, hpo_seed, hpo_version)."""
        call = Call("GET", study_path(self._name, "/user_attrs"), self._client.policies.default)
        return dict(self._client._http.request(call).json())

    def _is_multi_objective(self) -> bool:
        return self.spec.is_multi_objective

    # ------------------------------------------------------------------ reads

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """Every trial of the study by number (only those in ``states`` when given)."""
        out = []
        for item in self._client.trials(self._name, state=_one_state(states)):
            if states is None or optuna_state(item.state) in states:
                out.append(self._frozen(item.number, item.trial_id))
        return copy.deepcopy(out) if deepcopy else out

    @property
    def best_trial(self) -> FrozenTrial:
        if self._is_multi_objective():
            raise RuntimeError(
                "A single best trial cannot be retrieved from a multi-objective study. "
                "Consider using Study.best_trials to retrieve a list containing the best trials."
            )
        best = self._client.get_study(self._name).best_trial
        if best is None:
            raise ValueError("No trials are completed yet.")
        return copy.deepcopy(self._frozen(best.number, best.trial_id))

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front (the best trial when the study has one objective)."""
        front = self._client.pareto(self._name).trials
        return [copy.deepcopy(self._frozen(t.number, t.trial_id)) for t in front]

    @property
    def best_value(self) -> float:
        value = self.best_trial.value
        assert value is not None
        return value

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best_trial.params

    def trials_dataframe(
        self,
        attrs: tuple[str, ...] = DATAFRAME_ATTRS,
        multi_index: bool = False,
    ) -> Any:
        """Optuna's ``trials_dataframe`` (needs pandas)."""
        try:
            importlib.import_module("pandas")  # only to say clearly what is missing
        except ImportError as exc:
            raise ImportError(
                "trials_dataframe() needs pandas, which is not installed: pip install pandas"
            ) from exc
        from optuna.study._dataframe import _trials_dataframe

        return _trials_dataframe(self, attrs, multi_index)  # type: ignore[arg-type]

    def _frozen(self, number: int, trial_id: int) -> FrozenTrial:
        """Trial ``number`` as a FrozenTrial (a finished one from the cache)."""
        cached = self._finished.get(number)
        if cached is not None and cached._trial_id == trial_id:
            return cached
        frozen = frozen_trial(self._client.trial(self._name, number), space_of(self.spec))
        if frozen.state.is_finished():
            self._finished[number] = frozen
        return frozen


def space_of(spec: StudySpec) -> dict[str, Any]:
    return {name: p.model_dump() for name, p in spec.space.items()}


def _one_state(states: Container[TrialState] | None) -> str | None:
    """The API's state filter when ``states`` is one finished or waiting state."""
    if states is None or not isinstance(states, Iterable):
        return None
    wanted = list(states)
    if len(wanted) == 1 and wanted[0] != TrialState.RUNNING:
        return str(wanted[0].name).lower()
    return None
