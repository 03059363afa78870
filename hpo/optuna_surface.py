"""The parts of ``optuna.trial.Trial`` beyond suggest/report: ``study``, ``storage``,
``distributions``, constraints, the deprecated suggests (a mixin of :class:`hpo.Trial`).

Optuna is imported only when one of these is used (``import hpo`` does not need it):
``trial.study`` is Optuna's own ``Study`` over a storage that reads the study through
the trial's lease (:mod:`hpo.optuna_compat`), fetched once and kept for the trial's
lifetime, with the trial's own state (params, reports, attributes) always current.
So integration callbacks that read ``trial.study.direction`` or ``best_value``, and
``optuna.artifacts.upload_artifact(study_or_trial=trial, ...)``, run unchanged.
"""

from __future__ import annotations

import datetime
import importlib.util
import warnings
from typing import TYPE_CHECKING, Any, cast

from hpo.constraints import CONSTRAINT_PREFIX, check_constraint
from hpo.optuna_view import TrialAttrsRequest
from hpo.protocol import TrialSpec

if TYPE_CHECKING:
    from hpo.trial import Trial

_DEPRECATED = (
    "{name} has been deprecated in v3.0.0. This feature will be removed in v6.0.0. "
    "See https://github.com/optuna/optuna/releases/tag/v3.0.0. Use suggest_float{args} instead."
)


class OptunaSurface:
    """Optuna's trial interface on top of :class:`hpo.Trial`'s lease state."""

    # set by hpo.Trial.__init__
    _client: Any
    _spec: TrialSpec
    _params: dict[str, Any]
    _dists: dict[str, dict[str, Any]]
    _intermediate: dict[int, float]
    _user_attrs: dict[str, Any]
    _system_attrs: dict[str, Any]
    uploaded: set[str]  # ids of the artifacts this attempt stored
    _started: datetime.datetime
    _storage: Any = None
    _study: Any = None
    #: Optuna sets this when it samples relatively; here the declared space, if any
    relative_search_space: dict[str, Any] | None = None

    if TYPE_CHECKING:  # hpo.Trial's

        def suggest_float(
            self,
            name: str,
            low: float,
            high: float,
            *,
            step: float | None = None,
            log: bool = False,
        ) -> float: ...

    # ------------------------------------------------------------------ study and storage

    @property
    def study(self) -> Any:
        """The trial's study: Optuna's ``Study``, read-only, served through the lease."""
        if self._study is None:
            _need_optuna("trial.study")
            import optuna

            from hpo.optuna_compat import read_only_sampler

            self._study = optuna.Study(
                study_name=self._spec.study_name,
                storage=self.storage,
                sampler=read_only_sampler(),
                pruner=optuna.pruners.NopPruner(),
            )
        return self._study

    @property
    def storage(self) -> Any:
        """Optuna's storage interface over the lease (what trial-level callers use)."""
        if self._storage is None:
            _need_optuna("trial.storage")
            from hpo.optuna_compat import LeaseStorage

            self._storage = LeaseStorage(self._client, cast("Trial", self))
        return self._storage

    @property
    def artifact_store(self) -> Any:
        """Optuna's artifact-store protocol on the server's store, for
        ``optuna.artifacts.upload_artifact(artifact_store=trial.artifact_store, ...)``."""
        _need_optuna("trial.artifact_store")
        from hpo.optuna_compat import LeaseArtifactStore

        return LeaseArtifactStore(self._client, cast("Trial", self))

    @property
    def _trial_id(self) -> int:
        """Optuna's trial id (``optuna.artifacts.upload_artifact`` passes it to storage)."""
        return int(self._spec.trial_id)

    # ------------------------------------------------------------------ Optuna's properties

    @property
    def distributions(self) -> dict[str, Any]:
        """Each suggested parameter's Optuna distribution, by name."""
        _need_optuna("trial.distributions")
        from hpo.optuna_compat import to_distribution

        return {name: to_distribution(d) for name, d in self._dists.items()}

    @property
    def user_attrs(self) -> dict[str, Any]:
        """The trial's user attributes (a copy; set them with ``set_user_attr``)."""
        return dict(self._user_attrs)

    @property
    def system_attrs(self) -> dict[str, Any]:
        """The system attributes this trial set (constraints), as Optuna's storage has them."""
        return dict(self._system_attrs)

    @property
    def datetime_start(self) -> datetime.datetime:
        """When this attempt started (Optuna's naive local time)."""
        return self._started

    @property
    def relative_params(self) -> dict[str, Any]:
        """Parameters sampled jointly before the objective ran: a declared space's
        (sampled at lease time); define-by-run samples each parameter when asked."""
        return dict(self._spec.params) if self._spec.space is not None else {}

    @property
    def intermediate_values(self) -> dict[int, float]:
        """The values reported so far, by step."""
        return dict(self._intermediate)

    # ------------------------------------------------------------------ constraints

    @property
    def constraints(self) -> dict[str, float]:
        """Constraint values set on this trial (feasible when all are <= 0)."""
        n = len(CONSTRAINT_PREFIX)
        return {k[n:]: v for k, v in self._system_attrs.items() if k.startswith(CONSTRAINT_PREFIX)}

    def set_constraint(self, key: str, value: float) -> None:
        """Set a constraint value (<= 0: satisfied); sent to the server at once, where
        Optuna's constrained samplers and ``best_trials`` read it. A key already set
        keeps its value, with a warning, as in Optuna."""
        number = check_constraint(key, value)
        attr = f"{CONSTRAINT_PREFIX}{key}"
        if attr in self._system_attrs:
            warnings.warn(
                f"The constraint value is ignored because this constraint `{key=}` is already set.",
                UserWarning,
                stacklevel=2,
            )
            return
        self.set_system_attr_now(attr, number)

    def set_system_attr_now(self, key: str, value: Any) -> None:
        """Write one system attribute of this trial through its lease (server-checked)."""
        body = TrialAttrsRequest(system_attrs={key: value})
        self._client.set_trial_attrs(self._spec.lease_id, body)
        self._system_attrs[key] = value

    # ------------------------------------------------------------------ deprecated suggests

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        """Deprecated (Optuna 3.0): ``suggest_float(name, low, high)``."""
        _warn("suggest_uniform", "")
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        """Deprecated (Optuna 3.0): ``suggest_float(name, low, high, log=True)``."""
        _warn("suggest_loguniform", "(..., log=True)")
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        """Deprecated (Optuna 3.0): ``suggest_float(name, low, high, step=q)``."""
        _warn("suggest_discrete_uniform", "(..., step=...)")
        return self.suggest_float(name, low, high, step=q)


def _warn(name: str, args: str) -> None:
    warnings.warn(_DEPRECATED.format(name=name, args=args), FutureWarning, stacklevel=3)


def _need_optuna(what: str) -> None:
    """A clear error where Optuna is missing (hpo's base install and the worker extra do
    not bring it; an objective written for Optuna has it)."""
    if importlib.util.find_spec("optuna") is None:
        raise ModuleNotFoundError(
            f"{what} is Optuna's: install it where the objective runs (pip install optuna)",
            name="optuna",
        )
