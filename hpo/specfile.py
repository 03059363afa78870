"""Study spec files: read a YAML spec and validate it locally, errors naming the field.

Used by ``hpo.Client.create_study(path)`` and ``hpo study create``, so a typo is
reported before any network call. The server validates again (and adds the
checks that need Optuna: sampler and pruner options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpo.spec import StudySpec

_DISCRIMINATORS = {"float", "int", "categorical"}


class SpecFileError(ValueError):
    """A spec file that cannot be read, parsed or validated; the message says where."""


def load_spec_file(path: Path) -> dict[str, Any]:
    """The spec in ``path`` as a dict, validated against :class:`StudySpec`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecFileError(f"{path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise SpecFileError(f"{path}: a study spec must be a YAML mapping")
    try:
        StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecFileError(f"{path}: " + "; ".join(describe(e) for e in exc.errors())) from exc
    return data


def describe(err: Any) -> str:
    """One validation error as ``field.path: message``."""
    parts = [str(p) for p in err.get("loc", ())]
    parts = [p for p in parts if p not in _DISCRIMINATORS and not p.startswith("function-")]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{'.'.join(parts)}: {msg}" if parts else msg


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem
