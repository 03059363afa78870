"""Device telemetry over the trial protocol: heartbeats carry the worker's latest sample
(stored with the worker, exported per worker at /metrics); complete carries the trial's."""

from __future__ import annotations

from tests.support import study_spec

API = "/api/v1"


def test_heartbeat_and_complete_telemetry_are_stored(client, tokens) -> None:
    admin = {"Authorization": f"Bearer {tokens.admin}"}
    worker = {"Authorization": f"Bearer {tokens.worker}"}
    spec = study_spec(
        "watched", workload="toy", space={"x": {"type": "float", "low": 0, "high": 1}}
    )
    assert client.post(f"{API}/studies", json=spec, headers=admin).status_code == 201
    body = {"hostname": "box", "name": "box:gpu0", "workloads": ["toy"]}
    wid = client.post(f"{API}/workers/register", json=body, headers=worker).json()["worker_id"]
    trial = client.post(f"{API}/trials/lease", json={"worker_id": wid}, headers=worker).json()
    lease = trial["trial"]["lease_id"]
    sample = {"util_pct": 23.5, "device_memory_mb": 4096.0, "cpu_pct": 12.0}
    beat = client.post(
        f"{API}/leases/{lease}/heartbeat", json={"telemetry": sample}, headers=worker
    )
    assert beat.status_code == 200 and beat.json()["action"] == "continue"
    metrics = client.get("/metrics").text
    assert 'hpo_worker_utilization_percent{worker="box:gpu0"} 23.5' in metrics
    assert 'hpo_worker_device_memory_mb{worker="box:gpu0"} 4096.0' in metrics
    bad = client.post(
        f"{API}/leases/{lease}/heartbeat", json={"telemetry": {"u": "x"}}, headers=worker
    )
    assert bad.status_code == 422
    report = {
        "step": 1,
        "value": 0.5,
        "metrics": {"samples_per_s": 1000.0, "data_time_s": 0.25, "epoch_time_s": 1.0},
    }
    assert (
        client.post(f"{API}/leases/{lease}/report", json=report, headers=worker).status_code == 200
    )
    done = {"value": 0.5, "telemetry": {"util_mean_pct": 40.0, "util_peak_pct": 90.0}}
    assert (
        client.post(f"{API}/leases/{lease}/complete", json=done, headers=worker).status_code == 200
    )
    detail = client.get(f"{API}/studies/watched/trials/0", headers=admin).json()
    assert detail["telemetry"] == {
        "util_mean_pct": 40.0,
        "util_peak_pct": 90.0,
        "samples_per_s": 1000.0,
        "data_wait_share": 0.25,
    }


def test_an_own_objective_reporting_the_metrics_gets_the_findings(client, tokens) -> None:
    """Findings come from what a trial reported, whoever ran it: an own objective that
    reports train_loss and val_loss gets the same checks as the built-in trainer."""
    admin = {"Authorization": f"Bearer {tokens.admin}"}
    worker = {"Authorization": f"Bearer {tokens.worker}"}
    spec = study_spec("own", workload="toy", space={"x": {"type": "float", "low": 0, "high": 1}})
    assert client.post(f"{API}/studies", json=spec, headers=admin).status_code == 201
    body = {"hostname": "box", "workloads": ["toy"]}
    wid = client.post(f"{API}/workers/register", json=body, headers=worker).json()["worker_id"]
    lease = client.post(f"{API}/trials/lease", json={"worker_id": wid}, headers=worker).json()
    lease_id = lease["trial"]["lease_id"]
    for step in range(1, 6):  # a loss that barely moves: underfitting, as the trainer's would
        metrics = {"train_loss": 2.30 - 0.001 * step, "val_loss": 2.30, "val_accuracy": 0.11}
        report = {"step": step, "value": 0.11, "metrics": metrics}
        assert (
            client.post(f"{API}/leases/{lease_id}/report", json=report, headers=worker).status_code
            == 200
        )
    assert (
        client.post(
            f"{API}/leases/{lease_id}/complete", json={"value": 0.11}, headers=worker
        ).status_code
        == 200
    )
    findings = client.get(f"{API}/studies/own/trials/0", headers=admin).json()["findings"]
    assert [f["kind"] for f in findings] == ["underfitting"]
    assert findings[0]["evidence"] and "train" in findings[0]["message"].lower()
