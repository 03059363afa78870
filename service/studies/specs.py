"""Server-side checks of a study spec, and stored specs parsed once.

The spec schema itself is :mod:`hpo.spec` (pydantic only, shared with clients).
Here the server adds what needs Optuna: sampler and pruner options checked
against their classes (a 422 naming the option at creation) and samplers that
cannot run on this server refused. The sampler and pruner factories and the
define-by-run suggestions are :mod:`service.storage.samplers`.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
from typing import Any

import optuna

from hpo.spec import PRUNERS, SAMPLERS, StudySpec
from service.core.errors import InvalidSpec

#: Samplers that need a package the server extra does not install (Optuna imports it
#: only when sampling starts, after the start-up trials: refuse such a study at creation).
_SAMPLER_NEEDS = {"gp": "torch"}


def check_with_optuna(spec: StudySpec) -> None:
    """Raise InvalidSpec (422, naming the field) for options Optuna would refuse, and for
    a sampler whose dependencies this server lacks."""
    needed = _SAMPLER_NEEDS.get(spec.sampler.name)
    if needed and importlib.util.find_spec(needed) is None:
        raise InvalidSpec(
            f"sampler.name: the {spec.sampler.name!r} sampler needs {needed!r}, which is not "
            f"installed on this server; install it there or choose another sampler",
            "sampler.name",
        )
    sampler_cls = getattr(optuna.samplers, SAMPLERS[spec.sampler.name])
    _check_options(sampler_cls, spec.sampler.options, "sampler")
    pruner_cls = getattr(optuna.pruners, PRUNERS[spec.pruner.name])
    _check_options(pruner_cls, spec.pruner.options, "pruner")
    try:
        pruner_cls(**spec.pruner.options)
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(f"pruner.options: bad pruner options: {exc}", "pruner.options") from exc


def _check_options(cls: type, options: dict[str, Any], where: str) -> None:
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in options:
        if not accepts_any and key not in params:
            field = f"{where}.options.{key}"
            raise InvalidSpec(f"{field}: unknown option for {cls.__name__}", field)


def stored_spec(data: dict[str, Any]) -> StudySpec:
    """A spec as stored with its study (validated at creation), parsed once per content.

    Validating a spec builds its sampler and pruner to check their options; done for
    every lease, report and complete it cost more than some of their queries. Specs
    are never changed in place, so equal content gives one shared object.
    """
    return _stored_spec(json.dumps(data))  # key order matters: the space is define-by-run


@functools.lru_cache(maxsize=512)
def _stored_spec(text: str) -> StudySpec:
    return StudySpec.model_validate_json(text)
