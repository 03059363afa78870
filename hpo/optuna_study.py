"""``client.study(name)``: Optuna's ask-and-tell and optimize loop against the service.

A notebook drives a study by hand while workers lease the rest::

    import hpo

    study = hpo.Client(url, token).study("quadratic")
    trial = study.ask()                     # an hpo.Trial (an optuna.trial.Trial too)
    x = trial.suggest_float("x", -10, 10)   # define-by-run: sampled on the server
    study.tell(trial, (x - 2) ** 2)

    study.optimize(objective, n_trials=20, callbacks=[MaxTrialsCallback(50)])
    print(study.best_trial.params, len(study.trials))

* ``ask()`` registers this process once as a worker named ``client:<host>:<pid>``
  (the study's workload and resources), leases one trial of the study through the
  ordinary trial protocol and keeps its lease alive from a background thread
  (:class:`hpo.keepalive.LeaseKeeper`) until it is told. A declared space's values
  come with the lease; define-by-run ``suggest_*`` calls sample on the server. No
  trial to give (budget used, paused, stopped...): :class:`NoTrialAvailable` names
  why; a full ``max_concurrent`` is waited for (``wait_s``).
* ``tell(trial, values, state)`` has Optuna's meanings (a trial or its number; a
  pruned tell stores the last reported value; a second tell raises ValueError);
  ``value=`` is an alias of a single value, and ``state`` may also be an
  :class:`hpo.protocol.TrialOutcome` or ``"complete"``/``"pruned"``/``"fail"``.
  The result goes through :func:`hpo.running.send_result`, as a worker's does.
* ``optimize`` is Optuna's sequential loop (``n_jobs`` must be 1: more workers are
  the parallelism): TrialPruned prunes, an exception not in ``catch`` fails the
  trial and is raised, callbacks are called as ``callback(study, frozen_trial)``.
  It ends early when the study's budget is used or the study is stopped.
* ``stop()`` ends this process's optimize loop only; the study goes on for the
  workers (``client.stop(name)`` stops it on the server).
* reads (``trials``, ``get_trials``, ``best_trial``, ``trials_dataframe``...) are
  Optuna's ``FrozenTrial`` objects built from the REST API (:mod:`hpo.optuna_reads`,
  :mod:`hpo.optuna_frozen`), over every trial of the study, whoever ran it.
* ``enqueue_trial(params)`` is Optuna's (``POST /studies/{study}/enqueue``): the
  next lease of the study, by a worker or by ``ask()``, runs those params.

Importing this module imports Optuna; ``import hpo`` does not import it.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from optuna.trial import FrozenTrial

from hpo.client import Client, study_path
from hpo.keepalive import LeaseKeeper
from hpo.optuna_frozen import frozen_trial, suggest_distribution
from hpo.optuna_reads import StudyReads, space_of
from hpo.protocol import (
    LeaseRequest,
    NoWork,
    NoWorkCode,
    Resources,
    TrialOutcome,
    WorkerRegistration,
)
from hpo.running import Ending, Result, abandoned, call_objective, send_result
from hpo.schemas import EnqueuedTrial, EnqueueRequest
from hpo.transport import ApiError, Call
from hpo.trial import Control, Trial, new_trial

log = logging.getLogger("hpo.optuna_study")

#: No-work codes after which a study hands out nothing more: optimize ends quietly.
_DONE = frozenset({NoWorkCode.BUDGET_USED, NoWorkCode.STOPPED})
#: What a tell may end a trial as (Optuna's state names, lower case, or ours).
_TELL_STATES = {s.value: s for s in (TrialOutcome.COMPLETE, TrialOutcome.PRUNED, TrialOutcome.FAIL)}


class NoTrialAvailable(RuntimeError):
    """The study had no trial to hand out; ``reasons`` (and ``codes``) say why."""

    def __init__(self, study: str, reasons: Sequence[NoWork]) -> None:
        self.study, self.reasons = study, list(reasons)
        self.codes = [r.code for r in self.reasons]
        why = "; ".join(r.message for r in self.reasons) or "no reason given"
        super().__init__(f"study {study!r} has no trial to hand out: {why}")

    @property
    def retry_soon(self) -> bool:
        """True when a trial may come within seconds (a concurrency slot frees up)."""
        return bool(self.codes) and all(code.retry_soon for code in self.codes)


class ClientStudy(StudyReads):
    """One service study with Optuna's ``Study`` API (see the module docstring)."""

    def __init__(self, client: Client, name: str) -> None:
        super().__init__(client, name)
        self._worker_id: str | None = None
        self._open: dict[int, Trial] = {}  # asked, not told yet, by number
        self._keeper = LeaseKeeper(client.clone)
        self._stop_flag = self._in_optimize = False

    def close(self) -> None:
        """Give back the trials asked and not told (they run again on a worker)."""
        for trial in list(self._open.values()):
            send_result(self._client, trial, abandoned("the client study was closed"))
            self._close(trial)
        self._keeper.close()

    def __enter__(self) -> ClientStudy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ enqueue

    def enqueue_trial(
        self,
        params: dict[str, Any],
        user_attrs: dict[str, Any] | None = None,
        skip_if_exists: bool = False,
    ) -> int | None:
        """Optuna's ``enqueue_trial``: the next lease of the study runs ``params`` (the
        rest sampled). The WAITING trial's number (None when skipped as existing)."""
        if not isinstance(params, dict):
            raise TypeError("params must be a dictionary.")
        body = EnqueueRequest(
            params=params, user_attrs=user_attrs or {}, skip_if_exists=skip_if_exists
        )
        call = Call(
            "POST",
            study_path(self._name, "/enqueue"),
            self._client.policies.default,
            json=body.model_dump(mode="json"),
        )
        return EnqueuedTrial.model_validate(self._client._http.request(call).json()).number

    # ------------------------------------------------------------------ ask

    def ask(
        self, fixed_distributions: dict[str, Any] | None = None, *, wait_s: float = 30.0
    ) -> Trial:
        """Lease one trial of the study (waiting up to ``wait_s`` for a concurrency slot);
        NoTrialAvailable when it has none to give."""
        answer = self._lease(wait_s)
        spec = answer.trial
        assert spec is not None
        trial = new_trial(self._client, spec, Control())  # an optuna.trial.Trial too
        self._open[trial.number] = trial
        self._keeper.add(spec, trial.control)
        for name, dist in (fixed_distributions or {}).items():
            suggest_distribution(trial, name, dist)
        return trial

    def _lease(self, wait_s: float) -> Any:
        request = LeaseRequest(worker_id=self._worker(), studies=[self._name])
        answer = self._client.lease(request)
        deadline = time.monotonic() + max(0.0, wait_s)
        while answer.trial is None and NoTrialAvailable(self._name, answer.reasons).retry_soon:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            answer = self._client.lease(request.model_copy(update={"wait_s": min(left, 30.0)}))
        if answer.trial is None:
            raise NoTrialAvailable(self._name, answer.reasons)
        return answer

    def _worker(self) -> str:
        """This process's worker identity for the study (registered once)."""
        if self._worker_id is None:
            host = socket.gethostname()[:200] or "localhost"
            spec = self.spec
            registration = WorkerRegistration(
                hostname=host,
                name=f"client:{host}:{os.getpid()}",
                workloads=[spec.workload],
                resources=Resources(
                    gpus=spec.resources.gpus, gpu_memory_gb=spec.resources.gpu_memory_gb
                ),
            )
            self._worker_id = self._client.register(registration).worker_id
        return self._worker_id

    # ------------------------------------------------------------------ tell

    def tell(
        self,
        trial: Trial | int,
        values: float | Sequence[float] | None = None,
        state: Any = None,
        skip_if_finished: bool = False,
        *,
        value: float | None = None,
    ) -> FrozenTrial:
        """Finish an asked trial, with Optuna's meanings (see the module docstring)."""
        if value is not None:
            if values is not None:
                raise ValueError("give value or values, not both")
            values = value
        number = _number_of(trial)
        kind = _state_kind(state)
        asked = self._open.get(number)
        if asked is None:
            return self._not_open(number, skip_if_finished)
        return self._finish(asked, self._judge(asked, kind, _as_list(values)))

    def _judge(self, trial: Trial, kind: TrialOutcome | None, values: list[Any] | None) -> Result:
        """The result to send for a tell (ValueError for a combination Optuna refuses)."""
        if kind == TrialOutcome.COMPLETE and values is None:
            raise ValueError(
                "No values were told. Values are required when state is TrialState.COMPLETE."
            )
        if kind in (TrialOutcome.PRUNED, TrialOutcome.FAIL) and values is not None:
            raise ValueError(
                "Values were told. Values cannot be specified when state is "
                "TrialState.PRUNED or TrialState.FAIL."
            )
        if kind == TrialOutcome.PRUNED:
            last = trial.last_value
            ok = last is not None and math.isfinite(last)
            return Result(Ending.PRUNED, values=[last] if ok else None)  # type: ignore[list-item]
        if kind == TrialOutcome.FAIL:
            return Result(Ending.FAILED, reason="told as failed")
        problem = "The value None could not be cast to float." if values is None else None
        problem = problem or self._infeasible(values or [])
        if problem and kind == TrialOutcome.COMPLETE:
            raise ValueError(problem)
        if problem:
            warnings.warn(f"trial {trial.number}: {problem}; told as failed", stacklevel=3)
            return Result(Ending.FAILED, reason=problem)
        floats = [float(v) for v in values or []]
        return Result(Ending.COMPLETED, values=floats, diagnosis=trial.diagnosis)

    def _infeasible(self, values: list[Any]) -> str | None:
        """Why ``values`` cannot complete the trial (None: they can)."""
        for v in values:
            try:
                number = float(v)
            except (TypeError, ValueError):
                return f"The value {v!r} could not be cast to float"
            if not math.isfinite(number):
                return f"The value {v} is not acceptable (the service stores finite values)"
        wanted = len(self.spec.study_directions)
        if len(values) != wanted:
            return (
                f"The number of the values {len(values)} did not match the number of the "
                f"objectives {wanted}"
            )
        return None

    def _finish(self, trial: Trial, result: Result) -> FrozenTrial:
        """Send the one final call for ``result``; the trial as it is stored now."""
        answer = send_result(self._client, trial, result)
        self._close(trial)
        if answer is None:
            raise RuntimeError(
                f"trial {trial.number} of study {self._name!r}: the result was not delivered "
                f"({trial.control.drop_reason or 'see the log'})"
            )
        return self._frozen(trial.number, trial.spec.trial_id)

    def _close(self, trial: Trial) -> None:
        self._open.pop(trial.number, None)
        self._keeper.remove(trial.spec.lease_id)

    def _not_open(self, number: int, skip_if_finished: bool) -> FrozenTrial:
        """Tell of a trial this object does not hold: Optuna's errors, or the trial."""
        try:
            detail = self._client.trial(self._name, number)
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            raise ValueError(
                f"Cannot tell for trial with number {number} since it has not been created."
            ) from exc
        frozen = frozen_trial(detail, space_of(self.spec))
        if frozen.state.is_finished():
            if skip_if_finished:
                return frozen
            raise ValueError(
                f"Cannot tell a {frozen.state.name} trial: trial {number} of study "
                f"{self._name!r} is already finished"
            )
        raise ValueError(
            f"Cannot tell trial {number} of study {self._name!r}: it is {detail.state} on "
            f"worker {detail.worker_id or 'none'}; only trials this study object asked for "
            "can be told"
        )

    # ------------------------------------------------------------------ optimize

    def optimize(
        self,
        func: Callable[[Trial], Any],
        n_trials: int | None = None,
        timeout: float | None = None,
        n_jobs: int = 1,
        catch: Iterable[type[Exception]] | type[Exception] = (),
        callbacks: Iterable[Callable[[Any, FrozenTrial], None]] | None = None,
        gc_after_trial: bool = False,
        show_progress_bar: bool = False,
    ) -> None:
        """Optuna's sequential optimize loop over trials leased from the service."""
        if n_jobs != 1:
            raise ValueError(
                "n_jobs: one trial at a time here; run more workers (hpo worker) instead"
            )
        caught = tuple(catch) if isinstance(catch, Iterable) else (catch,)
        start, self._stop_flag, self._in_optimize = time.monotonic(), False, True
        try:
            for _ in range(n_trials) if n_trials is not None else itertools.count():
                if self._stop_flag or (timeout is not None and time.monotonic() - start > timeout):
                    break
                trial = self._ask_in_loop(None if timeout is None else start + timeout)
                if trial is None:
                    break
                frozen = self._run_trial(func, trial, caught)
                if gc_after_trial:
                    gc.collect()
                for callback in callbacks or ():
                    callback(self, frozen)
        finally:
            self._in_optimize = False

    def stop(self) -> None:
        """End the optimize loop after this trial (the study goes on for the workers)."""
        if not self._in_optimize:
            raise RuntimeError(
                "`Study.stop` is supposed to be invoked inside an objective function or a callback."
            )
        self._stop_flag = True

    def _ask_in_loop(self, deadline: float | None) -> Trial | None:
        """The next trial (a full ``max_concurrent`` is waited for, up to ``deadline``);
        None once the study hands out no more (budget used, stopped) or time is up."""
        while True:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            try:
                return self.ask(wait_s=min(30.0, max(0.0, left)))
            except NoTrialAvailable as exc:
                if exc.retry_soon and left > 0:
                    continue
                if exc.retry_soon:
                    return None
                if set(exc.codes) <= _DONE:
                    log.info("%s", exc)
                    return None
                raise

    def _run_trial(
        self, func: Callable[[Trial], Any], trial: Trial, catch: tuple[type[Exception], ...]
    ) -> FrozenTrial:
        """Optuna's ``_run_trial``: call, judge, tell; re-raise what ``catch`` lacks."""
        raised: list[BaseException] = []

        def call(t: Trial) -> Any:
            try:
                return func(t)
            except BaseException as exc:
                raised.append(exc)
                raise

        try:
            result = call_objective(trial, call)
        except (KeyboardInterrupt, SystemExit) as exc:
            self._finish(trial, Result(Ending.FAILED, reason=f"interrupted: {exc!r}"))
            raise
        if result.ending == Ending.DROPPED:  # the lease is gone: nothing to tell
            self._close(trial)
            log.warning("trial %d dropped: %s", trial.number, result.reason)
            return self._frozen(trial.number, trial.spec.trial_id)
        if result.ending == Ending.ERROR:  # a worker would hand it back; Optuna fails it
            result = replace(result, ending=Ending.FAILED, retry=False)
        frozen = self._finish(trial, result)
        error = raised[0] if raised else None
        if result.ending == Ending.FAILED and error is not None and not isinstance(error, catch):
            raise error
        if result.ending == Ending.FAILED:
            log.warning("trial %d failed: %s", trial.number, result.reason)
        return frozen


def _number_of(trial: Trial | int) -> int:
    if isinstance(trial, bool) or not isinstance(trial, int | Trial):
        raise TypeError("Trial must be a trial object or trial number.")
    return trial if isinstance(trial, int) else trial.number


def _state_kind(state: Any) -> TrialOutcome | None:
    """complete / pruned / fail (None: from the values) from Optuna's TrialState, our
    TrialOutcome or FinishState, or a string."""
    if state is None:
        return None
    name = str(getattr(state, "name", state)).lower()
    if name not in _TELL_STATES:
        raise ValueError(f"Cannot tell with state {state}.")
    return _TELL_STATES[name]


def _as_list(values: Any) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        return list(values)
    return [values]
