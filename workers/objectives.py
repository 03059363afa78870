"""``--objective MODULE:FUNCTION``: the user's objective, loaded once at start.

The worker's working directory comes first on ``sys.path`` (as for ``python
-m``), so ``hpo worker --objective train:objective`` finds ``./train.py``. Every
problem (no colon, a module that does not import, a missing or uncallable
attribute) is an :class:`ObjectiveError` that names it; the worker exits at
start with code 2 instead of failing every trial.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any


class ObjectiveError(ValueError):
    """``--objective`` cannot be used; the message says why."""


def load_objective(ref: str) -> Callable[[Any], Any]:
    """The callable named by ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ObjectiveError(f"--objective {ref!r}: expected MODULE:FUNCTION, e.g. train:objective")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error is the user's to fix
        raise ObjectiveError(
            f"--objective {ref!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ObjectiveError(f"--objective {ref!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ObjectiveError(f"--objective {ref!r}: {attr!r} is not callable")
    return target
