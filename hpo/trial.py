"""``hpo.Trial``: Optuna's trial API over a lease, so an objective runs unchanged on the fleet.

An objective written for ``study.optimize`` takes a trial and calls
``suggest_float`` / ``suggest_int`` / ``suggest_categorical``, ``report``,
``should_prune`` and ``set_user_attr``; :class:`Trial` answers each through the
trial's lease:

* a study with a declared ``space`` leased the values already: ``suggest_*``
  returns them, and fails the trial (:class:`SpaceMismatch`, naming the
  parameter) when the objective asks for something the spec does not declare;
* a study without a space is define-by-run: each new parameter is sampled on
  the server by the study's Optuna sampler (one round trip), and a re-run gets
  the recorded value back.

Raise :class:`TrialPruned` (or Optuna's) to prune. Extensions beyond Optuna's API:
``report(..., metrics=...)`` sends more per-step metrics (the diagnosis reads
them), ``set_metrics`` stores final metrics with the trial, ``settings`` and
``seed`` carry the study's fixed settings and the trial's seed, ``stopping``
tells a long-running step to stop at once.

Checkpoints (:mod:`hpo.checkpoints`): ``checkpoint_dir`` is a local folder; what
is in it when ``report(value, step)`` returns is committed as the checkpoint of
that step. On a re-run the folder holds the latest checkpoint before the
objective starts and ``resume_step`` names its step (None on a fresh start).
``upload_artifact(path)`` stores any other file with the trial.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.checkpoints import CheckpointFolder
from hpo.constraints import as_float
from hpo.optuna_surface import OptunaSurface
from hpo.protocol import (
    MAX_METRIC_NAME,
    MAX_METRICS,
    Action,
    ActionResponse,
    ArtifactInfo,
    ArtifactKind,
    ReportRequest,
    SuggestRequest,
    TrialSpec,
)
from hpo.transport import ClientError, LeaseGone

log = logging.getLogger("hpo.trial")


class TrialPruned(Exception):  # Optuna's name, so objectives read the same
    """Raise from an objective to end the trial as pruned."""


class TrialStopped(Exception):
    """The trial must end now without a result: the lease is gone, the study stopped,
    or the worker is shutting down (raised by the trial's methods)."""


class SpaceMismatch(ValueError):
    """The objective asked for a parameter the study's spec does not declare this way."""


@dataclass
class Control:
    """Flags shared by a trial, the worker's heartbeat thread and its signal handler."""

    shutdown: threading.Event = field(default_factory=threading.Event)
    prune: threading.Event = field(default_factory=threading.Event)
    drop: threading.Event = field(default_factory=threading.Event)
    drop_reason: str = ""
    pause: threading.Event = field(default_factory=threading.Event)  # a schedule's pause

    def should_stop(self) -> bool:
        """True once training must stop at the next step boundary."""
        stops = (self.shutdown, self.prune, self.drop, self.pause)
        return any(flag.is_set() for flag in stops)

    def apply(self, answer: ActionResponse, source: str) -> None:
        """Act on a heartbeat/report answer: prune or stop set a flag."""
        if answer.action == Action.PRUNE and not self.prune.is_set():
            log.info("server asks to prune (%s)", source)
            self.prune.set()
        elif answer.action == Action.STOP:
            self.drop_trial(f"server says stop ({source}): {answer.message or 'no reason'}")
        elif answer.action == Action.PAUSE and not self.pause.is_set():
            log.info("the schedule pauses the trial (%s): %s", source, answer.message or "")
            self.pause.set()

    def drop_trial(self, reason: str) -> None:
        """Stop training and end the attempt without complete/fail."""
        if not self.drop.is_set():
            self.drop_reason = reason
            self.drop.set()


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float | int | str | None]:
    """Map metrics onto what the wire accepts: NaN/Inf -> None, bool -> int, else str."""
    out: dict[str, float | int | str | None] = {}
    for name, value in metrics.items():
        key = str(name)[:MAX_METRIC_NAME]
        if len(out) >= MAX_METRICS or not key:
            continue
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, int) or value is None:
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else None
        else:
            out[key] = str(value)[:1000]
    return out


def trial_label(spec: TrialSpec) -> str:
    """``study#number`` for log lines."""
    return f"{spec.study_name}#{spec.trial_number}"


class Trial(OptunaSurface):
    """One leased trial, with Optuna's trial API (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        spec: TrialSpec,
        control: Control | None = None,
        on_report: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self._client, self._spec = client, spec
        self.control = control or Control()
        self._on_report = on_report
        self._params: dict[str, Any] = {}
        self._dists: dict[str, dict[str, Any]] = {}  # each param's distribution, as asked
        self._intermediate: dict[int, float] = {}
        self._user_attrs: dict[str, Any] = {}
        self._system_attrs: dict[str, Any] = {}
        self.uploaded: set[str] = set()
        self._started = datetime.datetime.now()  # Optuna's times are naive local times
        self.metrics: dict[str, Any] = {}
        self.diagnosis: str | None = None
        self.telemetry: dict[str, float] | None = None  # set by the worker that ran it
        self.last_value: float | None = None
        self.last_step: int | None = None
        self.checkpoints: CheckpointFolder | None = None  # attached by the worker

    # ------------------------------------------------------------------ checkpoints

    def attach_checkpoints(self, folder: Path, fetch: bool = True) -> int | None:
        """Give the trial its checkpoint folder, filled from the lease's latest checkpoint
        (older ones on failure); the step it continues from (None: a fresh start).
        ``fetch=False``: the worker holds that checkpoint's state already (a PBT segment
        whose parent trained in the same pack): the folder stays empty, the resume is
        noted; :meth:`fetch_checkpoint` fills it later if need be."""
        self.checkpoints = CheckpointFolder(self._client, self._spec.lease_id, folder, self.label)
        if fetch or self._spec.resume is None:
            step = self.checkpoints.restore(self._spec.resume)
        else:
            self.checkpoints.resume, step = self._spec.resume, self._spec.resume.step
        self._note_resume(step)
        return step

    def fetch_checkpoint(self) -> int | None:
        """Fill the folder with the checkpoint :meth:`attach_checkpoints` did not fetch
        (older ones on failure); the step it continues from (None: a fresh start)."""
        if self.checkpoints is None:
            return None
        step = self.checkpoints.restore(self.checkpoints.resume)
        self._note_resume(step)
        return step

    @property
    def checkpoint_dir(self) -> Path | None:
        """The attempt's checkpoint folder (None when the worker gave none)."""
        return self.checkpoints.folder if self.checkpoints else None

    @property
    def resume_step(self) -> int | None:
        """The step of the checkpoint this attempt continues from (None: fresh start)."""
        resume = self.checkpoints.resume if self.checkpoints else None
        return resume.step if resume else None

    def reject_checkpoint(self, reason: str) -> int | None:
        """The objective could not read the checkpoint in ``checkpoint_dir``: fall back to
        the one before it (refilling the folder) or a fresh start; the new resume step."""
        if self.checkpoints is None:
            return None
        step = self.checkpoints.restore(self.checkpoints.reject(reason))
        self._note_resume(step)
        return step

    def _note_resume(self, step: int | None) -> None:
        assert self.checkpoints is not None
        if step is None:
            self._user_attrs.pop("resumed_from_step", None)
        else:
            self._user_attrs["resumed_from_step"] = step
        if self.checkpoints.warnings:
            self._user_attrs["checkpoint_warnings"] = list(self.checkpoints.warnings)[-10:]

    def commit_checkpoint(self, step: int | None = None) -> bool:
        """Commit the folder now (the worker does at a preemption); True when sent."""
        if self.checkpoints is None:
            return False
        step = step if step is not None else (self.last_step or self.resume_step or 0)
        return self.checkpoints.commit(step)

    def flush_checkpoints(self) -> bool:
        """Wait for a checkpoint upload in flight (before the attempt's final call)."""
        return self.checkpoints.flush() if self.checkpoints is not None else True

    def upload_artifact(
        self,
        path: str | Path,
        kind: ArtifactKind = ArtifactKind.FILE,
        *,
        filename: str | None = None,
        artifact_id: str | None = None,
    ) -> ArtifactInfo:
        """Store a file with this trial (streamed, hash-checked); its metadata is Optuna's."""
        info: ArtifactInfo = self._client.upload_artifact(
            self._spec.lease_id, path, kind, self.last_step, filename, artifact_id
        )
        self.uploaded.add(info.artifact_id)
        return info

    # ------------------------------------------------------------------ identity

    @property
    def number(self) -> int:
        """The trial's number in its study (Optuna's)."""
        return self._spec.trial_number

    @property
    def params(self) -> dict[str, Any]:
        """The parameters suggested so far, by name (Optuna's ``trial.params``)."""
        return dict(self._params)

    @property
    def spec(self) -> TrialSpec:
        """The lease's trial spec (study, attempt, objectives, fixed settings...)."""
        return self._spec

    @property
    def study_name(self) -> str:
        return self._spec.study_name

    @property
    def settings(self) -> dict[str, Any]:
        """The study's fixed settings plus the leased params under their setting names."""
        return dict(self._spec.settings)

    @property
    def seed(self) -> int:
        """The trial's seed, derived from the study seed and the trial number."""
        return self._spec.seed

    @property
    def stopping(self) -> bool:
        """True once the trial should stop at the next step (pruned, stopped, shutdown)."""
        return self.control.should_stop()

    # ------------------------------------------------------------------ suggest

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """A float in [low, high] (log scale or a step grid, as in Optuna)."""
        dist = {"type": "float", "low": low, "high": high, "log": log, "step": step}
        return float(self._suggest(name, dist))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """An int in [low, high] (log scale or a step, as in Optuna)."""
        dist = {"type": "int", "low": low, "high": high, "log": log, "step": step}
        return int(self._suggest(name, dist))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """One of ``choices``."""
        return self._suggest(name, {"type": "categorical", "choices": list(choices)})

    def _suggest(self, name: str, dist: dict[str, Any]) -> Any:
        self._check_live()
        if name in self._params:
            return self._params[name]
        if self._spec.space is not None:
            value = self._declared(name, dist)
            dist = {**self._spec.space[name], "type": dist["type"]}
        else:
            value = self._sample(name, dist)
        self._params[name], self._dists[name] = value, dist
        return value

    def _declared(self, name: str, dist: dict[str, Any]) -> Any:
        declared = self._spec.space.get(name) if self._spec.space else None
        if declared is None:
            names = ", ".join(self._spec.space or {}) or "none"
            raise SpaceMismatch(
                f"parameter {name!r} is not in the study's space (declared: {names})"
            )
        problem = _disagreement(declared, dist)
        if problem:
            raise SpaceMismatch(f"parameter {name!r}: {problem}")
        if name not in self._spec.params:
            raise SpaceMismatch(
                f"parameter {name!r} was not sampled for this trial: its condition "
                f"when={declared.get('when')} does not hold"
            )
        return self._spec.params[name]

    def _sample(self, name: str, dist: dict[str, Any]) -> Any:
        body = SuggestRequest(
            name=name, distribution={k: v for k, v in dist.items() if v is not None}
        )
        try:
            return self._client.suggest(self._spec.lease_id, body).value
        except LeaseGone as exc:
            self.control.drop_trial(f"lease gone: {exc.detail}")
            raise TrialStopped(self.control.drop_reason) from exc

    # ------------------------------------------------------------------ report, prune

    def report(self, value: float, step: int, metrics: dict[str, Any] | None = None) -> None:
        """One intermediate objective value (per epoch); ``metrics`` go with it."""
        self._check_live()
        value, step = _report_args(value, step)
        if step in self._intermediate:  # Optuna ignores a second report of a step
            log.warning("%s: step %d is already reported; value ignored", self.label, step)
            return
        self._intermediate[step] = value
        self.last_value, self.last_step = value, step
        if self._on_report is not None:
            self._on_report(step, {**(metrics or {}), "value": value})
        if not math.isfinite(value):
            log.warning("%s: reported value %s is not finite; not sent", self.label, value)
            return
        body = ReportRequest(step=step, value=value, metrics=clean_metrics(metrics or {}))
        try:
            answer = self._client.report(self._spec.lease_id, body)
        except LeaseGone as exc:
            self.control.drop_trial(f"lease gone: {exc.detail}")
            return
        except ClientError as exc:  # the pruner misses one value; training goes on
            log.warning("%s: report of step %d not delivered: %s", self.label, step, exc)
            answer = None
        if answer is not None:
            self.control.apply(answer, f"report step {step}")
        if self.checkpoints is not None and not self.control.drop.is_set():
            self.checkpoints.commit(step, wait=False)  # uploads while training goes on

    def should_prune(self) -> bool:
        """True when the study's pruner (or the server) says this trial should stop; also
        when a schedule pauses it (the worker then hands it back with its checkpoint)."""
        self._check_live()
        return self.control.prune.is_set() or self.control.pause.is_set()

    # ------------------------------------------------------------------ attributes

    def set_user_attr(self, key: str, value: Any) -> None:
        """Stored with the trial as an Optuna user attribute (sent when it finishes)."""
        self._user_attrs[str(key)] = value

    def set_metrics(self, metrics: dict[str, Any]) -> None:
        """Final metrics of the trial (test accuracy, sizes...): export columns."""
        self.metrics.update(metrics)

    @property
    def label(self) -> str:
        return trial_label(self._spec)

    def _check_live(self) -> None:
        if self.control.drop.is_set():
            raise TrialStopped(self.control.drop_reason or "the trial was dropped")
        if self.control.shutdown.is_set():
            raise TrialStopped("the worker is shutting down")


def new_trial(
    client: Any,
    spec: TrialSpec,
    control: Control | None = None,
    on_report: Callable[[int, dict[str, Any]], None] | None = None,
) -> Trial:
    """The trial a worker hands an objective: also an ``optuna.trial.Trial`` when Optuna
    is installed (``isinstance`` checks of integrations and ``upload_artifact`` pass)."""
    if importlib.util.find_spec("optuna") is None:
        return Trial(client, spec, control, on_report)
    from hpo.optuna_compat import OptunaTrial

    return OptunaTrial(client, spec, control, on_report)


def _report_args(value: Any, step: Any) -> tuple[float, int]:
    """``report``'s checks, as Optuna makes them."""
    number = as_float(value)
    try:
        whole = int(step)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `step` argument is of type '{type(step)}' but supposed to be an int."
        ) from None
    if whole < 0:
        raise ValueError(f"`step={whole}` must be non-negative.")
    return number, whole


def _disagreement(declared: dict[str, Any], asked: dict[str, Any]) -> str | None:
    """How the objective's distribution differs from the declared one (None: it agrees)."""
    if declared.get("type") != asked["type"]:
        return (
            f"the objective asks for a {asked['type']}, the spec declares a {declared.get('type')}"
        )
    keys = ("choices",) if asked["type"] == "categorical" else ("low", "high", "log", "step")
    for key in keys:
        want, got = declared.get(key), asked.get(key)
        if key == "step" and asked["type"] == "int":
            want, got = want or 1, got or 1
        if key == "log":
            want, got = bool(want), bool(got)
        if want != got and not _close(want, got):
            return f"the objective asks for {key}={got!r}, the spec declares {key}={want!r}"
    return None


def _close(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return False
