"""Inside a training process started by ``hpo worker --command``: the trial it runs.

The worker passes the lease's trial through the environment (``HPO_TRIAL``,
``HPO_SERVER``, ``HPO_TOKEN``; ``HPO_CHECKPOINT_DIR`` its checkpoint folder, which
the trial's reports commit). :func:`current_trial` returns it as an
:class:`hpo.Trial` (reports and define-by-run suggestions go to the server
directly); :func:`run` calls an objective on it and finishes the trial with
what the objective returned, exactly as ``hpo worker --objective`` would::

    import hpo

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        ...
        return accuracy

    if __name__ == "__main__":
        hpo.run(objective)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo.checkpoints import CheckpointFolder
from hpo.client import Client
from hpo.protocol import Checkpoint, TrialSpec
from hpo.running import Ending, call_objective, send_result
from hpo.trial import Trial, new_trial

_current: Trial | None = None


def current_trial() -> Trial:
    """This process's trial (the same object on every call)."""
    global _current
    if _current is None:
        raw = os.environ.get("HPO_TRIAL")
        if not raw:
            raise RuntimeError(
                "hpo.current_trial(): this process runs no trial (HPO_TRIAL is not set); "
                "start it with `hpo worker --command ...`"
            )
        spec = TrialSpec.model_validate_json(raw)
        client = Client(os.environ.get("HPO_SERVER"), os.environ.get("HPO_TOKEN"))
        _current = new_trial(client, spec)
        _adopt_checkpoints(_current)
    return _current


def _adopt_checkpoints(trial: Trial) -> None:
    """The worker's checkpoint folder (already restored): reports commit it from here."""
    folder = os.environ.get("HPO_CHECKPOINT_DIR")
    if not folder:
        return
    trial.checkpoints = CheckpointFolder(trial._client, trial.spec.lease_id, Path(folder))
    resume = os.environ.get("HPO_RESUME")
    trial.checkpoints.resume = Checkpoint.model_validate_json(resume) if resume else None


def run(objective: Callable[[Trial], Any]) -> Any:
    """Call ``objective(current_trial())`` and finish the trial with its result.

    Returns what the objective returned; exits with status 1 when the trial failed
    (the failure, with the exception's message, is recorded on the server).
    """
    trial = current_trial()
    result = call_objective(trial, objective)
    send_result(trial._client, trial, result)  # the trial's own client
    if result.ending in (Ending.FAILED, Ending.ERROR):
        raise SystemExit(f"trial {trial.label} failed: {result.reason}")
    return result.values[0] if result.values and len(result.values) == 1 else result.values
