"""The daemon's decisions, against a fake trial-protocol server over real HTTP.

Training is replaced by a scripted stand-in (``FakeTrainer``) that calls the
hooks the way workers.trainer does, so each test runs in well under a second;
the settings are validated by the real TrainConfig. The real trainer, the real
server and real processes are exercised together in tests/e2e.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from workers.daemon import Worker
from workers.data import MnistNotFound
from workers.options import ExitCode, WorkerOptions
from workers.outcome import TrainResult

NOW = datetime.now(UTC)
Answer = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def trial_spec(number: int, **overrides: Any) -> dict[str, Any]:
    spec = {
        "lease_id": f"lease-{number}",
        "trial_id": 100 + number,
        "trial_number": number,
        "study_name": "s",
        "attempt": 1,
        "params": {"optimizer": "adam", "lr": 0.001},
        "fixed": {"epochs": 3, "train_subset": 100},
        "objective": "val_accuracy",
        "direction": "maximize",
        "seed": 42 + number,
        "lease_expires_at": (NOW + timedelta(seconds=60)).isoformat(),
        "heartbeat_interval_s": 0.05,
    }
    spec.update(overrides)
    spec.setdefault("settings", {**spec["fixed"], **spec["params"]})
    return spec


class FakeService:
    """Trial protocol server: hands out ``trials`` in order and records every call."""

    def __init__(self, trials: list[dict[str, Any]]) -> None:
        self.trials = list(trials)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (kind, lease_id, body)
        self.on_report: Answer = lambda lease, body: (200, {"action": "continue"})
        self.on_heartbeat: Answer = lambda lease, body: (200, {"action": "continue"})
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        kwargs = {"poll_interval": 0.05}
        threading.Thread(target=self.httpd.serve_forever, kwargs=kwargs, daemon=True).start()

    def of(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(lease, body) for k, lease, body in self.calls if k == kind]

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/api/v1/workers/register":
            self._record("register", "", body)
            return 200, {
                "worker_id": "w1",
                "hostname": body["hostname"],
                "registered_at": NOW.isoformat(),
                "last_seen_at": NOW.isoformat(),
            }
        if path == "/api/v1/trials/lease":
            self._record("lease", "", body)
            with self.lock:
                trial = self.trials.pop(0) if self.trials else None
            return 200, {"trial": trial, "retry_after_s": 0.05, "reason": "queue empty"}
        match = re.fullmatch(r"/api/v1/leases/([^/]+)/(\w+)", path)
        assert match, path
        lease, kind = match.groups()
        self._record(kind, lease, body)
        if kind == "report":
            return self.on_report(lease, body)
        if kind == "heartbeat":
            return self.on_heartbeat(lease, body)
        state = body.get("state", "queued" if body.get("retry") else "fail")
        return 200, {"trial_id": 1, "trial_number": 1, "state": state, "value": body.get("value")}

    def _record(self, kind: str, lease: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append((kind, lease, body))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = service.answer(self.path, json.loads(raw or b"{}"))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler


class FakeTrainer:
    """Stands in for workers.trainer.train: epochs of fixed metrics, driven by the hooks."""

    def __init__(self, accuracies: list[float] | None = None) -> None:
        self.accuracies = accuracies or [0.80, 0.85, 0.90]
        self.during_epoch: Callable[[int], None] = lambda epoch: None
        self.diverge_at: int | None = None
        self.configs: list[Any] = []

    def __call__(
        self, config: Any, data: Any, device: Any, hooks: Any, checkpoint: Any = None
    ) -> TrainResult:
        self.configs.append(config)
        history: list[dict[str, float]] = []
        status, diagnosis = "completed", None
        for epoch in range(1, config.epochs + 1):
            self.during_epoch(epoch)
            if hooks.should_stop():
                status = "stopped"
                break
            acc = self.accuracies[(epoch - 1) % len(self.accuracies)]
            metrics = {
                "epoch": epoch,
                "train_loss": 1 - acc,
                "val_loss": 1.5 - acc,
                "val_accuracy": acc,
                "lr": 0.001,
                "epoch_time_s": 0.01,
            }
            if epoch == self.diverge_at:
                metrics["train_loss"] = float("nan")
                history.append(metrics)
                status, diagnosis = "diverged", f"diverged at epoch {epoch}: loss nan"
                break
            history.append(metrics)
            if not hooks.on_epoch(epoch, metrics):
                status = "pruned"
                break
        final = dict(history[-1]) if history else {}
        final.update(test_accuracy=0.88, n_params=407050, total_time_s=0.1)
        objective = history[-1]["val_accuracy"] if history else None
        return TrainResult(status, objective, len(history), history, final, diagnosis)


@pytest.fixture
def trainer() -> FakeTrainer:
    return FakeTrainer()


def run(service: FakeService, trainer: FakeTrainer, **options: Any) -> tuple[int, Worker]:
    opts = WorkerOptions(
        server=service.url, token="t", device="cpu", wait_s=0.0, idle_backoff_s=0.1, **options
    )
    worker = Worker(
        opts, load_data=lambda root, device: "DATA", train=trainer, install_signals=False
    )
    return worker.run(), worker


@pytest.fixture
def serve() -> Iterator[Callable[[list[dict[str, Any]]], FakeService]]:
    """Start fake services handing out the given trials; all are shut down afterwards."""
    started: list[FakeService] = []

    def start(trials: list[dict[str, Any]]) -> FakeService:
        started.append(FakeService(trials))
        return started[-1]

    yield start
    for service in started:
        service.httpd.shutdown()
        service.httpd.server_close()


@pytest.fixture
def one_trial(serve: Callable[[list[dict[str, Any]]], FakeService]) -> FakeService:
    return serve([trial_spec(0)])


# --------------------------------------------------------------------------- outcomes


def test_completed_trial_reports_each_epoch_then_completes(one_trial, trainer) -> None:
    code, worker = run(one_trial, trainer, max_trials=1)
    assert code == ExitCode.OK and worker.trials_done == 1
    reports = one_trial.of("report")
    assert [body["step"] for _, body in reports] == [1, 2, 3]  # epoch numbers, from 1
    assert [body["value"] for _, body in reports] == [0.80, 0.85, 0.90]
    assert reports[0][1]["metrics"]["val_loss"] == pytest.approx(0.7)
    [(lease, body)] = one_trial.of("complete")
    assert lease == "lease-0" and body["state"] == "complete" and body["value"] == 0.90
    assert body["metrics"]["test_accuracy"] == 0.88 and body["metrics"]["status"] == "completed"
    assert one_trial.of("fail") == []
    config = trainer.configs[0]  # fixed merged with params, seed from the trial
    assert (config.optimizer, config.lr, config.epochs, config.seed) == ("adam", 0.001, 3, 42)
    register = one_trial.of("register")[0][1]
    assert register["devices"][0].startswith("cpu") and register["hostname"]


def test_bad_settings_fail_without_retry_and_the_worker_goes_on(serve, trainer) -> None:
    service = serve([trial_spec(0, params={"optimizer": "adam", "lr": -1.0}), trial_spec(1)])
    code, _ = run(service, trainer, max_trials=2)
    assert code == ExitCode.OK
    [(lease, body)] = service.of("fail")
    assert lease == "lease-0" and body["retry"] is False and "'lr'" in body["reason"]
    assert [lease for lease, _ in service.of("complete")] == ["lease-1"]


def test_server_prune_on_report_completes_as_pruned(one_trial, trainer) -> None:
    one_trial.on_report = lambda lease, body: (
        200,
        {"action": "prune" if body["step"] == 2 else "continue"},
    )
    run(one_trial, trainer, max_trials=1)
    assert len(one_trial.of("report")) == 2  # training stopped after the pruned epoch
    [(_, body)] = one_trial.of("complete")
    assert body["state"] == "pruned" and body["value"] == 0.85  # the last reported value


def test_prune_from_heartbeat_stops_training_at_the_next_batch(one_trial, trainer) -> None:
    # Prune only once epoch 1 was reported; epoch 2 lasts long enough for a heartbeat.
    one_trial.on_heartbeat = lambda lease, body: (
        200,
        {"action": "prune" if one_trial.of("report") else "continue"},
    )
    trainer.during_epoch = lambda epoch: time.sleep(0.5) if epoch == 2 else None
    run(one_trial, trainer, max_trials=1)
    [(_, body)] = one_trial.of("complete")
    assert body["state"] == "pruned" and body["value"] == 0.80
    assert len(one_trial.of("report")) == 1
    assert one_trial.of("heartbeat")[0][1]["progress"] == pytest.approx(1 / 3)


def test_stop_from_heartbeat_drops_the_trial(one_trial, trainer) -> None:
    one_trial.on_heartbeat = lambda lease, body: (200, {"action": "stop", "message": "stopped"})
    trainer.during_epoch = lambda epoch: time.sleep(0.5)
    code, worker = run(one_trial, trainer, max_trials=1)
    assert code == ExitCode.OK and worker.trials_done == 1
    assert one_trial.of("complete") == [] and one_trial.of("fail") == []


def test_lease_gone_on_report_drops_the_trial(one_trial, trainer) -> None:
    one_trial.on_report = lambda lease, body: (409, {"detail": "lease expired"})
    run(one_trial, trainer, max_trials=1)
    assert len(one_trial.of("report")) == 1
    assert one_trial.of("complete") == [] and one_trial.of("fail") == []


def test_diverged_completes_with_the_accuracy_and_a_diagnosis(one_trial, trainer) -> None:
    trainer.diverge_at = 2
    run(one_trial, trainer, max_trials=1)
    [(_, body)] = one_trial.of("complete")
    assert body["state"] == "complete" and body["diagnosis"] == "diverged"
    assert body["value"] == 0.85  # the accuracy measured at divergence
    assert "diverged at epoch 2" in body["metrics"]["diagnosis"]
    assert body["metrics"]["train_loss"] is None  # NaN is not JSON: sent as null


def test_objective_other_than_accuracy_is_reported(serve, trainer) -> None:
    service = serve([trial_spec(0, objective="val_loss", direction="minimize")])
    run(service, trainer, max_trials=1)
    assert [b["value"] for _, b in service.of("report")] == pytest.approx([0.7, 0.65, 0.6])
    assert service.of("complete")[0][1]["value"] == pytest.approx(0.6)


def test_shutdown_mid_trial_abandons_for_a_rerun(one_trial, trainer) -> None:
    holder: dict[str, Worker] = {}
    trainer.during_epoch = lambda epoch: holder["w"].request_shutdown() if epoch == 2 else None
    opts = WorkerOptions(server=one_trial.url, token="t", device="cpu", wait_s=0.0)
    worker = holder["w"] = Worker(
        opts, load_data=lambda r, d: "DATA", train=trainer, install_signals=False
    )
    assert worker.run() == ExitCode.OK
    [(lease, body)] = one_trial.of("fail")
    assert body.pop("telemetry")["samples"] >= 1  # device figures go with the result
    assert body == {  # a shutdown is a preemption: handed back, not counted as a retry
        "reason": "worker preempted (SIGTERM)",
        "retry": True,
        "preempted": True,
        "diagnosis": None,
        "user_attrs": {},
    }
    assert one_trial.of("complete") == []
    assert len(one_trial.of("lease")) == 1  # no new work after the signal


def test_missing_mnist_exits_before_leasing(one_trial, trainer) -> None:
    def missing(root: Any, device: Any) -> Any:
        raise MnistNotFound("MNIST not found in data/MNIST/raw")

    opts = WorkerOptions(server=one_trial.url, token="t", device="cpu")
    assert Worker(opts, load_data=missing, train=trainer, install_signals=False).run() == 2
    assert one_trial.calls == []


def test_no_work_waits_and_asks_again(serve, trainer) -> None:
    service = serve([])
    later = threading.Timer(0.4, lambda: service.trials.append(trial_spec(5)))
    later.start()
    code, _ = run(service, trainer, max_trials=1)
    later.join()
    assert code == ExitCode.OK
    assert len(service.of("lease")) >= 2 and len(service.of("complete")) == 1


def test_training_error_fails_the_trial(one_trial, trainer) -> None:
    def boom(epoch: int) -> None:
        raise ValueError("shapes do not match")

    trainer.during_epoch = boom
    code, _ = run(one_trial, trainer, max_trials=1)
    assert code == ExitCode.OK
    [(_, body)] = one_trial.of("fail")
    assert body["retry"] is False and "shapes do not match" in body["reason"]


def test_cuda_error_gives_the_trial_back_and_exits_for_a_restart(one_trial, trainer) -> None:
    def boom(epoch: int) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    trainer.during_epoch = boom
    code, _ = run(one_trial, trainer)
    assert code == ExitCode.DEVICE
    [(_, body)] = one_trial.of("fail")
    assert body["retry"] is True and body["diagnosis"] == "device_error"


def test_unknown_device_is_a_configuration_error(one_trial, trainer) -> None:
    opts = WorkerOptions(server=one_trial.url, device="tpu")
    worker = Worker(opts, load_data=lambda r, d: "DATA", train=trainer, install_signals=False)
    assert worker.run() == ExitCode.CONFIG
    assert one_trial.calls == []


def test_a_lease_not_answered_is_asked_again_with_the_same_request_id() -> None:
    """Issue 23: the daemon keeps the request id until an answer arrives."""
    from hpo.protocol import LeaseResponse
    from hpo.transport import ServerUnavailable

    class Client:
        def __init__(self) -> None:
            self.ids: list[str | None] = []

        def lease(self, body: Any) -> LeaseResponse:
            self.ids.append(body.request_id)
            if len(self.ids) == 1:
                raise ServerUnavailable("down", "http://x")
            return LeaseResponse()

    opts = WorkerOptions(server="http://x", token="t", device="cpu", wait_s=0.0)
    worker = Worker(opts, load_data=lambda root, device: "DATA", install_signals=False)
    client = Client()
    for _ in range(3):
        worker._lease(client)  # type: ignore[arg-type]
    first, retry, fresh = client.ids
    assert first and first == retry and fresh != first
