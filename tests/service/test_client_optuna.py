"""``client.study(name)``: Optuna's ask/tell and optimize loop against a live server.

Every test drives a real server over HTTP (uvicorn on a free port) with
``hpo.Client``; what the service stored is checked against ``optuna.load_study``
on the server's database. Leases are short (2 s, heartbeats every 0.5 s), so a
trial held by hand only survives through the study's heartbeat thread.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.study import MaxTrialsCallback, StudyDirection
from optuna.trial import TrialState

import hpo
from hpo.optuna_study import ClientStudy, NoTrialAvailable
from hpo.protocol import CompleteRequest, LeaseRequest, TrialOutcome, WorkerRegistration
from hpo.transport import ApiError, RetryPolicies
from tests.support import LiveApp, live_app, study_spec

TOY = {"x": {"type": "float", "low": -5.0, "high": 5.0}}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live_app(
        tmp_path_factory.mktemp("optuna-client"), lease_ttl_s=2.0, heartbeat_interval_s=0.5
    ) as server:
        yield server


def client(live: LiveApp, role: str = "admin") -> hpo.Client:
    return hpo.Client(live.url, getattr(live.tokens, role), policies=RetryPolicies.interactive())


def create(live: LiveApp, name: str, space: dict[str, Any] | None = None, **spec: Any) -> None:
    body = study_spec(name, workload="toy", direction="minimize", objective="loss", **spec)
    body["space"] = space if space is not None else {}
    with client(live) as api:
        api.create_study(body)


def stored(live: LiveApp, name: str) -> optuna.Study:
    """The study as a plain Optuna client on the server's database sees it."""
    return optuna.load_study(study_name=name, storage=live.ctx.store.url)


def same(ours: optuna.trial.FrozenTrial, theirs: optuna.trial.FrozenTrial) -> None:
    """Equal in every field the REST API carries (system attributes aside)."""
    mine, optunas = dict(vars(ours)), dict(vars(theirs))
    mine.pop("_system_attrs"), optunas.pop("_system_attrs")
    assert mine == optunas


def quadratic(trial: hpo.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    trial.report(abs(x), 0)
    return (x - 2.0) ** 2


class Worker:
    """A worker that leases and completes trials of one study over the protocol."""

    def __init__(self, live: LiveApp, study: str) -> None:
        self.api, self.study = client(live, "worker"), study
        reg = WorkerRegistration(hostname="box", name="box:gpu0", workloads=["toy"])
        self.worker_id = self.api.register(reg).worker_id

    def lease(self) -> Any:
        answer = self.api.lease(LeaseRequest(worker_id=self.worker_id, studies=[self.study]))
        assert answer.trial is not None, answer.reason
        return answer.trial

    def complete(self, spec: Any, value: float) -> None:
        self.api.complete(spec.lease_id, CompleteRequest(value=value))


# --------------------------------------------------------------------------- ask and tell


def test_ask_and_tell_by_hand_on_a_define_by_run_study(live: LiveApp) -> None:
    create(live, "dbr-hand")
    with client(live) as api, api.study("dbr-hand") as study:
        assert isinstance(study, ClientStudy) and study.study_name == "dbr-hand"
        assert study.direction == StudyDirection.MINIMIZE
        trial = study.ask()
        assert isinstance(trial, hpo.Trial) and isinstance(trial, optuna.trial.Trial)
        assert trial.number == 0 and trial.spec.space is None
        x = trial.suggest_float("x", -5.0, 5.0)
        assert trial.suggest_float("x", -5.0, 5.0) == x  # sampled once, on the server
        trial.report(1.5, 0)
        frozen = study.tell(trial, (x - 2.0) ** 2)
        assert frozen.state == TrialState.COMPLETE and frozen.value == (x - 2.0) ** 2
        assert frozen.params == {"x": x}
        assert frozen.distributions == {"x": FloatDistribution(-5.0, 5.0)}
        assert frozen.intermediate_values == {0: 1.5}
    with live.client() as http:
        names = [w["name"] or "" for w in http.get("/workers").json()]
    assert any(name.startswith("client:") for name in names)
    same(frozen, stored(live, "dbr-hand").trials[0])


def test_ask_and_tell_by_number_on_a_declared_study(live: LiveApp) -> None:
    create(live, "declared-hand", space=TOY)
    with client(live) as api, api.study("declared-hand") as study:
        trial = study.ask()
        leased = trial.spec.params["x"]
        assert trial.suggest_float("x", -5.0, 5.0) == leased  # the leased value
        frozen = study.tell(trial.number, values=[leased**2])
        assert frozen.state == TrialState.COMPLETE and frozen.values == [leased**2]
        assert frozen.params == {"x": leased}
        assert study.trials[0].distributions == {"x": FloatDistribution(-5.0, 5.0)}
    optuna_trial = stored(live, "declared-hand").trials[0]
    assert optuna_trial.params == {"x": leased} and optuna_trial.value == leased**2


def test_a_trial_is_told_once(live: LiveApp) -> None:
    create(live, "told-twice", space=TOY)
    with client(live) as api, api.study("told-twice") as study:
        trial = study.ask()
        study.tell(trial, value=1.0)
        with pytest.raises(ValueError, match=r"Cannot tell a COMPLETE trial: trial 0 of study"):
            study.tell(trial, value=2.0)
        with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):
            study.tell(0, 2.0)
        assert study.tell(0, 2.0, skip_if_finished=True).value == 1.0
        with pytest.raises(ValueError, match="number 7 since it has not been created"):
            study.tell(7, 1.0)
        with pytest.raises(ValueError, match="Values are required"):
            study.tell(study.ask(), state=TrialState.COMPLETE)
        with pytest.raises(TypeError):
            study.tell("0", 1.0)  # type: ignore[arg-type]
    assert stored(live, "told-twice").trials[0].value == 1.0


def test_tell_pruned_stores_the_last_report_and_fail_states(live: LiveApp) -> None:
    create(live, "pruned-tell", space=TOY)
    with client(live) as api, api.study("pruned-tell") as study:
        states: list[Any] = [TrialState.PRUNED, TrialOutcome.PRUNED, "pruned"]
        for state in states:
            trial = study.ask()
            trial.report(3.0, 0)
            trial.report(0.5, 1)
            frozen = study.tell(trial, state=state)
            assert frozen.state == TrialState.PRUNED and frozen.value == 0.5
        refused = study.ask()
        with pytest.raises(ValueError, match="Values cannot be specified"):
            study.tell(refused, 1.0, state="pruned")
        assert study.tell(refused, state="fail").state == TrialState.FAIL  # still open
        with pytest.warns(UserWarning, match="could not be cast"):
            assert study.tell(study.ask()).state == TrialState.FAIL  # no value: failed
    optuna_states = [t.state for t in stored(live, "pruned-tell").trials]
    assert optuna_states == [TrialState.PRUNED] * 3 + [TrialState.FAIL] * 2


# --------------------------------------------------------------------------- optimize


def test_optimize_runs_n_trials_with_optunas_semantics(live: LiveApp) -> None:
    create(live, "optimize-n")
    seen: list[tuple[Any, int, TrialState]] = []

    def objective(trial: hpo.Trial) -> float:
        if trial.number == 1:
            raise optuna.TrialPruned()
        if trial.number == 2:
            raise KeyError("caught")
        return quadratic(trial)

    with client(live) as api, api.study("optimize-n") as study:
        study.optimize(
            objective,
            n_trials=5,
            catch=(KeyError,),
            callbacks=[lambda s, t: seen.append((s, t.number, t.state))],
        )
        assert [(n, s) for _, n, s in seen] == [
            (0, TrialState.COMPLETE),
            (1, TrialState.PRUNED),
            (2, TrialState.FAIL),
            (3, TrialState.COMPLETE),
            (4, TrialState.COMPLETE),
        ]
        assert all(s is study for s, _, _ in seen)
        with pytest.raises(ZeroDivisionError):
            study.optimize(lambda t: 1 / 0, n_trials=3)  # not caught: failed, then raised
        assert study.trials[-1].state == TrialState.FAIL and len(study.trials) == 6
        assert "ZeroDivisionError" in api.trial("optimize-n", 5).fail_reason
        with pytest.raises(RuntimeError, match="inside an objective"):
            study.stop()


def test_max_trials_callback_counts_the_workers_trials_too(live: LiveApp) -> None:
    create(live, "max-trials")
    worker = Worker(live, "max-trials")
    held = worker.lease()  # a worker's trial runs while the notebook drives the study
    with client(live) as api, api.study("max-trials") as study:
        callback = MaxTrialsCallback(4, states=(TrialState.COMPLETE,))
        study.optimize(quadratic, n_trials=2, callbacks=[callback])
        worker.complete(held, 9.0)
        study.optimize(quadratic, callbacks=[callback])  # no n_trials: the callback stops it
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        assert len(complete) == 4 and len(study.trials) == 4
        assert api.get_study("max-trials").state == "running"  # stop() left the study running
        assert sorted(t.number for t in complete) == [0, 1, 2, 3]
        assert study.trials[0].value == 9.0  # the worker's trial, as Optuna reads it


def test_best_trial_is_what_optuna_says(live: LiveApp) -> None:
    create(live, "best")
    with client(live) as api, api.study("best") as study:
        study.optimize(quadratic, n_trials=6)
        fresh = stored(live, "best")
        same(study.best_trial, fresh.best_trial)
        assert study.best_value == fresh.best_value and study.best_params == fresh.best_params
        assert [t.number for t in study.best_trials] == [fresh.best_trial.number]
        for ours, theirs in zip(study.trials, fresh.trials, strict=True):
            same(ours, theirs)
        frame = study.trials_dataframe()
        assert list(frame["number"]) == list(range(6)) and "params_x" in frame.columns
        assert list(frame["value"]) == [t.value for t in fresh.trials]
        assert study.user_attrs["hpo_spec"]["name"] == "best"


def test_a_workers_trial_and_a_hand_told_one_coexist(live: LiveApp) -> None:
    create(live, "coexist", space=TOY)
    worker = Worker(live, "coexist")
    first = worker.lease()
    with client(live) as api, api.study("coexist") as study:
        mine = study.ask()
        for _ in range(6):  # 3 s, past the 2 s lease: only the study's thread keeps it
            time.sleep(0.5)
            worker.api.heartbeat(first.lease_id)
        second = worker.lease()  # leasing expires overdue leases first
        assert second.trial_number not in (first.trial_number, mine.number)
        worker.complete(first, 1.0)
        study.tell(mine, 2.0)
        worker.complete(second, 3.0)
        with pytest.raises(ValueError, match="only trials this study object asked for"):
            study.tell(worker.lease().trial_number, 4.0)
        assert api.trial("coexist", mine.number).attempts == 1  # never re-leased
    values = {t.number: t.value for t in stored(live, "coexist").trials}
    assert values[first.trial_number] == 1.0 and values[mine.number] == 2.0


def test_closing_the_study_hands_untold_trials_to_the_workers(live: LiveApp) -> None:
    create(live, "handed-back", space=TOY)
    with client(live) as api, api.study("handed-back") as study:
        untold = study.ask()
    rerun = Worker(live, "handed-back").lease()
    assert (rerun.trial_number, rerun.attempt) == (untold.number, 2)
    assert rerun.params == untold.spec.params


# --------------------------------------------------------------------------- no work


def test_no_trial_to_give_says_why(live: LiveApp) -> None:
    create(live, "no-work", space=TOY, budget={"max_trials": 1})
    with client(live) as api, api.study("no-work") as study:
        study.tell(study.ask(), 1.0)
        with pytest.raises(NoTrialAvailable, match="budget used") as used:
            study.ask()
        assert used.value.codes == ["budget_used"]
        study.optimize(quadratic, n_trials=3)  # the budget is used: ends at once
        assert len(study.trials) == 1
    create(live, "paused", space=TOY)
    with client(live) as api, api.study("paused") as study:
        api.pause("paused")
        with pytest.raises(NoTrialAvailable, match="'paused' is paused") as paused:
            study.ask()
        assert paused.value.codes == ["paused"]
        with pytest.raises(NoTrialAvailable):
            study.optimize(quadratic, n_trials=1)


def test_concurrency_full_is_waited_for(live: LiveApp) -> None:
    create(live, "one-at-a-time", space=TOY, budget={"max_trials": 5, "max_concurrent": 1})
    worker = Worker(live, "one-at-a-time")
    with client(live) as api, api.study("one-at-a-time") as study:
        held = worker.lease()
        with pytest.raises(NoTrialAvailable, match="max_concurrent") as full:
            study.ask(wait_s=0.0)
        assert full.value.retry_soon
        worker.complete(held, 1.0)
        assert study.ask(wait_s=5.0).number == 1


# --------------------------------------------------------------------------- enqueue


def test_enqueued_params_are_leased_first(live: LiveApp) -> None:
    create(live, "enqueue-declared", space=TOY, sampler={"name": "tpe", "seed": 3})
    with client(live) as api, api.study("enqueue-declared") as study:
        study.optimize(quadratic, n_trials=3)  # TPE's view of the study is loaded now
        assert study.enqueue_trial({"x": 0.25}, user_attrs={"why": "hunch"}) == 3
        assert study.enqueue_trial({"x": 0.25}, skip_if_exists=True) is None
        study.enqueue_trial({"x": -1.0})
        trial = study.ask()
        assert (trial.number, trial.suggest_float("x", -5.0, 5.0)) == (3, 0.25)
        study.tell(trial, 1.0)
        worker = Worker(live, "enqueue-declared")
        assert worker.lease().params == {"x": -1.0}  # a worker takes the next one
        with pytest.raises(ApiError) as outside:
            study.enqueue_trial({"x": 9.0})
        assert outside.value.status_code == 422 and "outside" in outside.value.detail
        with pytest.raises(ApiError) as unknown:
            study.enqueue_trial({"y": 1.0})
        assert unknown.value.status_code == 422 and "not a parameter" in unknown.value.detail
    fresh = stored(live, "enqueue-declared").trials[3]
    assert fresh.system_attrs["fixed_params"] == {"x": 0.25} and fresh.user_attrs["why"] == "hunch"


def test_enqueue_on_a_define_by_run_study_and_budget(live: LiveApp) -> None:
    create(live, "enqueue-dbr", budget={"max_trials": 2})
    with client(live) as api, api.study("enqueue-dbr") as study:
        study.enqueue_trial({"x": 1.5})
        study.enqueue_trial({"x": -2.5})
        with pytest.raises(ApiError) as full:
            study.enqueue_trial({"x": 0.0})
        assert full.value.status_code == 409 and "budget used" in full.value.detail
        study.optimize(quadratic)
        assert [t.params["x"] for t in study.trials] == [1.5, -2.5]
        api.stop("enqueue-dbr")
        with pytest.raises(ApiError) as stopped:
            study.enqueue_trial({"x": 0.0})
    assert stopped.value.status_code == 409 and "stopped" in stopped.value.detail


def test_trials_dataframe_without_pandas_says_so(
    live: LiveApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with client(live) as api, pytest.raises(ImportError, match="needs pandas"):
        api.study("best").trials_dataframe()


def test_stopping_fails_enqueued_trials_so_wait_returns(live: LiveApp) -> None:
    create(live, "enqueue-stop", budget={"max_trials": 5})
    with client(live) as api:
        with api.study("enqueue-stop") as study:
            study.enqueue_trial({"x": 1.0})
            study.enqueue_trial({"x": 2.0})
        api.stop("enqueue-stop")
        summary = api.wait("enqueue-stop", timeout_s=10, poll_s=0.2, progress=False)
        assert summary.state == "stopped" and summary.counts.waiting == 0
    direct = optuna.load_study(study_name="enqueue-stop", storage=live.ctx.store.url)
    assert [t.state for t in direct.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all("stopped before" in t.user_attrs["fail_reason"] for t in direct.trials)
