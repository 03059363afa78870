"""A new team's first hour (issue "A new team's first hour"): each problem found by
trying the project as a new user, with a test that failed before it was fixed.

The other two live where their subject does: the demo's dashboard link in
tests/deploy/test_demo.py, the per-extra installs in scripts/check-extras.sh
(run by CI in clean virtual environments).
"""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from service.core.db import utcnow
from service.storage.models import WorkerRecord
from tests.support import ServerProcess, study_spec, wait_for

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- 1. the dashboard


def test_the_server_extra_declares_what_the_dashboard_imports() -> None:
    # `pip install 'hpo-service[server]'` must serve the dashboard: jinja2 is its template
    # engine (torch used to bring it in the all-extras test venv only).
    server = " ".join(_pyproject()["project"]["optional-dependencies"]["server"])
    assert "jinja2" in server.lower()


def test_the_dashboard_is_mounted_without_an_import_guard() -> None:
    # A missing dependency must fail loudly, not leave /dashboard silently absent.
    source = (ROOT / "service" / "app.py").read_text()
    assert "except ImportError" not in source and "except ModuleNotFoundError" not in source


def test_login_page_is_served(client) -> None:
    assert client.get("/dashboard/login").status_code == 200


# --------------------------------------------------------------------------- 2. samplers


def test_a_sampler_the_server_cannot_run_is_refused_at_creation(
    admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server extra has no torch; Optuna's GPSampler imports it only after its start-up
    # trials, so the study used to stall there. Simulate the torch-free server here (the
    # real one is checked by scripts/check-extras.sh in a venv with only the server extra).
    import service.studies.specs as specs

    real = specs.importlib.util.find_spec
    monkeypatch.setattr(
        specs.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name)
    )
    response = admin.post(f"{API}/studies", json=study_spec("gp", sampler={"name": "gp"}))
    assert response.status_code == 422
    assert response.json()["field"] == "sampler.name" and "torch" in response.json()["detail"]


# --------------------------------------------------------------------------- 6. worker restarts


def test_a_restarted_worker_replaces_its_gone_row(client, ctx, tokens) -> None:
    headers = {"Authorization": f"Bearer {tokens.worker}"}
    body = {"hostname": "box", "name": "box:gpu0", "devices": ["cuda:0"]}
    for _ in range(3):  # three restarts of the same worker process
        assert client.post(f"{API}/workers/register", json=body, headers=headers).status_code == 201
        with ctx.db.session() as session:  # ...each gone long enough to be shown as gone
            session.execute(update(WorkerRecord).values(last_seen_at=utcnow() - timedelta(hours=1)))
    other = {"hostname": "box", "name": "box:gpu1", "devices": ["cuda:1"]}
    assert client.post(f"{API}/workers/register", json=other, headers=headers).status_code == 201
    with ctx.db.session() as session:
        names = dict(
            session.execute(
                select(WorkerRecord.name, func.count()).group_by(WorkerRecord.name)
            ).all()
        )
    assert names == {"box:gpu0": 1, "box:gpu1": 1}


def test_the_reaper_forgets_workers_gone_for_long(client, ctx, tokens) -> None:
    from service.trials import reap_all

    headers = {"Authorization": f"Bearer {tokens.worker}"}
    body = {"hostname": "old", "name": "old:cpu"}
    assert client.post(f"{API}/workers/register", json=body, headers=headers).status_code == 201
    with ctx.db.session() as session:
        session.execute(update(WorkerRecord).values(last_seen_at=utcnow() - timedelta(days=2)))
    reap_all(ctx)
    assert client.get(f"{API}/workers", headers=headers).json() == []


# --------------------------------------------------------------------------- 7. MNIST download


def test_download_flag_reaches_torchvision_and_the_error_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from workers import data
    from workers.daemon import Worker
    from workers.options import WorkerOptions

    seen: list[bool] = []

    def fake_load(root: Path, device: Any, download: bool) -> str:
        seen.append(download)
        return "DATA"

    monkeypatch.setattr(data, "_load", fake_load)
    data.clear_cache()
    options = WorkerOptions(server="http://x", data_dir=str(tmp_path), download=True)
    assert Worker(options, install_signals=False)._data("cpu") == "DATA"
    assert seen == [True]
    data.clear_cache()
    with pytest.raises(data.MnistNotFound, match="--download"):
        data._check_files(tmp_path)


# --------------------------------------------------------------------------- 4. /metrics, logs


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.postgres
def test_metrics_add_up_every_server_process(tmp_path: Path, pg_url: str) -> None:
    settings = {"HPO_DATABASE_URL": pg_url, "HPO_WORKERS": "2"}
    server = ServerProcess(tmp_path, settings, log_name="server.log")
    server.argv += ["--workers", "2", "--log-format", "json"]
    server.start()
    try:
        admin, worker = server.client("admin"), server.client("worker")
        spec = study_spec(
            "metered", workload="toy", space={"x": {"type": "float", "low": 0, "high": 1}}
        )
        assert admin.post("/studies", json=spec).status_code == 201
        body = {"hostname": "h", "workloads": ["toy"]}
        wid = worker.post("/workers/register", json=body).json()["worker_id"]
        for _ in range(6):  # new connections: the requests spread over both processes
            url = server.url + API + "/trials/lease"
            lease = httpx.post(url, json={"worker_id": wid}, headers=worker.headers).json()
            assert lease["trial"] is not None
        for _ in range(8):
            answer = httpx.get(server.url + "/metrics")
            assert _counter(answer.text, "hpo_leases_granted_total") == 6
            assert 'hpo_trials_running{study="metered"} 6.0' in answer.text
            assert 'hpo_trials_waiting{study="metered"} 44.0' in answer.text
            assert 'hpo_workers_live{workload="toy"} 1.0' in answer.text
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        pids = {line["process"] for line in lines}
        assert lines and all("level" in line and "message" in line for line in lines)
        assert len(pids) >= 2, "two server processes log"
    finally:
        server.stop()


def test_server_log_lines_carry_their_level(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        httpx.get(server.url + "/healthz")
        wait_for(lambda: " INFO " in server.log(), 10, "an INFO line")
    finally:
        server.stop()
