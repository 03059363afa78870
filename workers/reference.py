"""The built-in workload (``mnist-mlp``) as an objective on :class:`hpo.Trial`.

The reference trainer is one objective like any other: it reads the trial's
settings (the study's fixed settings plus the leased parameters), trains with
hooks that report every epoch through ``trial.report`` and stop when
``trial.should_prune()`` or the worker says so, stores the final metrics with
the trial and returns the study's objective(s). A diverged run returns the
accuracy measured when it diverged, marked ``diagnosis = "diverged"``, so the
sampler learns that the region is bad.

Checkpoints: the trainer keeps its checkpoint file (workers.checkpoint) in the
trial's ``checkpoint_dir``, so each report commits it and a re-run continues
from it; one that cannot be resumed is rejected (the trial falls back to the one
before it, or a fresh start, with a warning). A completed run keeps its model as
an artifact of the trial (``model.pt``, and ``shipped.pt`` when compressed).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo.protocol import ArtifactKind
from hpo.settings import MODEL_METRICS, TrainConfig
from hpo.transport import ApiError, ClientError
from hpo.trial import Trial, TrialPruned, TrialStopped
from workers.results import TrainStatus

#: What a model artifact says it is: ``torch.load(path, weights_only=True)`` gives a dict
#: with this format, the run's settings (rebuild with workers.model.build_model) and
#: its ``state_dict``.
MODEL_FORMAT = "hpo-model/1"

log = logging.getLogger("workers.reference")


class TrialHooks:
    """Trainer hooks over a trial: report each epoch, stop when the trial must."""

    def __init__(self, trial: Trial, epochs: int) -> None:
        self.trial = trial
        self.epochs = epochs

    def should_stop(self) -> bool:
        """Polled by the trainer at every batch boundary."""
        return self.trial.stopping

    def on_resume(self, history: list[dict[str, float]]) -> bool:
        """A resumed run: report the epochs its checkpoint holds beyond the step the last
        attempt reported (it was stopped between writing and reporting one)."""
        done = self.trial.resume_step or 0
        for metrics in history:
            if int(metrics["epoch"]) > done and not self.on_epoch(int(metrics["epoch"]), metrics):
                return False
        pause_at = self.trial.spec.pause_at
        if pause_at is not None and history and int(history[-1]["epoch"]) >= pause_at:
            self.trial.control.pause.set()  # a schedule's pause it reached before a crash
            return False
        return True

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report the epoch; False (stop now) when the trial is pruned or dropped."""
        log.info(
            "%s epoch %d/%d val_acc=%.4f loss=%.4f %.1fs/epoch",
            self.trial.label,
            epoch,
            self.epochs,
            metrics.get("val_accuracy", float("nan")),
            metrics.get("train_loss", float("nan")),
            metrics.get("epoch_time_s", float("nan")),
        )
        value = metrics.get(self.trial.spec.objective)
        if isinstance(value, int | float) and math.isfinite(value):
            self.trial.report(float(value), epoch, metrics)
        else:
            log.warning("%s: objective %r is not a finite metric", self.trial.label, value)
        return not self.trial.stopping


class ReferenceObjective:
    """``objective(trial)`` for the built-in trainer, with MNIST already on ``device``."""

    def __init__(self, data: Any, device: str, train: Any = None) -> None:
        self.data, self.device = data, device
        self._train = train  # injectable for tests of the worker's logic

    def __call__(self, trial: Trial) -> float | list[float]:
        config = trial_config(trial)
        hooks = TrialHooks(trial, config.epochs)
        path = checkpoint_file(trial, config)
        inherit(trial, path, config)
        if self._train is not None:  # a test's trainer
            result = self._train(config, self.data, self.device, hooks, checkpoint=path)
        else:
            result = resuming(trial, path, lambda: self._run(config, hooks, path))
        if result.status == TrainStatus.COMPLETED and trial.checkpoint_dir is not None:
            keep_model(trial, config, result)
        return conclude(trial, result)

    def _run(self, config: TrainConfig, hooks: TrialHooks, path: Path | None) -> Any:
        """Train solo, or as a pack of one when the checkpoint is a pack member's."""
        from workers import checkpoint as ckpt
        from workers.trainer import train

        if path is None or ckpt.format_of(path) != ckpt.PACK_FORMAT:
            return train(config, self.data, self.device, hooks, checkpoint=path)
        from workers.packs import Member, PackTrainer

        pack = PackTrainer(self.data, self.device)
        pack.add(Member(0, config, hooks, checkpoint=path))
        return pack.run()[0]


def checkpoint_file(trial: Trial, config: TrainConfig) -> Path | None:
    """Where the trainer keeps its checkpoint: in the trial's folder (None: no checkpoints)."""
    from workers.checkpoint import FILENAME

    if trial.checkpoint_dir is None or config.checkpoint_every == 0:
        return None
    return trial.checkpoint_dir / FILENAME


def inherit(trial: Trial, path: Path | None, config: TrainConfig) -> None:
    """A PBT segment resuming its parent's checkpoint: rewrite it for this trial's
    settings (workers.inherit); one that cannot be is rejected like a bad checkpoint."""
    resume = trial.checkpoints.resume if trial.checkpoints else None
    if resume is None or resume.inherited_from is None or path is None or not path.exists():
        return
    from workers.checkpoint import CheckpointUnreadable
    from workers.inherit import adopt

    try:
        changed = adopt(path, config)
    except CheckpointUnreadable as exc:
        trial.reject_checkpoint(f"parent's checkpoint not adoptable: {exc}")
        return
    trial.set_user_attr("inherited_changes", {k: list(v) for k, v in changed.items()})


def resuming(trial: Trial, path: Path | None, run: Callable[[], Any]) -> Any:
    """``run()``, rejecting checkpoints it cannot resume until one works or none is left."""
    from hpo.checkpoints import MAX_FALLBACKS
    from workers.checkpoint import CheckpointUnreadable

    for _ in range(MAX_FALLBACKS):
        try:
            return run()
        except CheckpointUnreadable as exc:
            trial.reject_checkpoint(f"checkpoint not resumable: {exc}")
    if path is not None:
        path.unlink(missing_ok=True)  # still none that works: a fresh start
    return run()


def plain_state_dict(model: Any) -> dict[str, Any]:
    """The model's weights as ``build_model`` names them (pruning masks baked in)."""
    import copy

    from workers.compression.pruning import make_permanent

    return dict(make_permanent(copy.deepcopy(model)).state_dict())


def keep_model(trial: Trial, config: TrainConfig, result: Any) -> None:
    """Store the completed run's model with the trial (a failed upload only warns)."""
    import torch

    if result.model is None:
        return
    with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
        files = [Path(tmp) / "model.pt"]
        torch.save(
            {
                "format": MODEL_FORMAT,
                "settings": config.to_dict(),
                "state_dict": plain_state_dict(result.model),
            },
            files[0],
        )
        if result.shipped is not None:  # the compressed form, as a whole module
            files.append(Path(tmp) / "shipped.pt")
            torch.save(result.shipped, files[-1])
        for file in files:
            try:
                trial.upload_artifact(file, ArtifactKind.MODEL)
            except (ApiError, ClientError) as exc:
                log.warning("%s: model %s not stored: %s", trial.label, file.name, exc)


def trial_config(trial: Trial) -> TrainConfig:
    """The trial's training settings (SettingsError for a bad one). A study whose objectives
    include a model metric (bytes, latency...) gets its models measured as shipped."""
    config = TrainConfig.from_settings(trial.settings, trial.seed)
    wants = set(trial.spec.objectives or [trial.spec.objective]) & set(MODEL_METRICS)
    if wants and config.measure_model == "auto":
        config = config.model_copy(update={"measure_model": True})
    return config


def conclude(trial: Trial, result: Any) -> float | list[float]:
    """What a finished training run means for its trial: the objective value(s), or
    TrialPruned / TrialStopped; final metrics and a divergence go with the trial.
    Shared by solo trials and members of a fused pack."""
    trial.set_metrics(final_metrics(result))
    stopped = result.status == TrainStatus.STOPPED
    if result.status == TrainStatus.PRUNED or (stopped and trial.should_prune()):
        raise TrialPruned(f"pruned after {result.epochs_run} epochs")
    if stopped:
        raise TrialStopped("training stopped")
    if result.status == TrainStatus.DIVERGED:
        trial.diagnosis = "diverged"
        log.warning("%s diverged: %s", trial.label, result.diagnosis)
    names = trial.spec.objectives or [trial.spec.objective]
    values = [objective_value(name, result) for name in names]
    return values[0] if len(values) == 1 else values


def objective_value(name: str, result: Any) -> float:
    """The value of metric ``name`` for a finished training run (NaN when it has none)."""
    value = result.objective if name == "val_accuracy" else result.final.get(name)
    if value is None and result.history:
        value = result.history[-1].get(name)
    if not isinstance(value, int | float):
        return math.nan
    return float(value)


def final_metrics(result: Any) -> dict[str, Any]:
    """``result.final`` plus the run's status (the export's columns)."""
    metrics: dict[str, Any] = {
        "status": result.status,
        "epochs_run": result.epochs_run,
        **result.final,
    }
    if result.diagnosis:
        metrics["diagnosis"] = result.diagnosis
    return metrics
