"""hpo.Client and the ``hpo study`` CLI against a live server (uvicorn on a free port).

Every public method of the client is called over real HTTP; trials are run
through the client's own trial-protocol methods (register, lease, report,
suggest, complete), as a worker would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import hpo
from hpo.cli.study import study_app
from hpo.protocol import (
    CompleteRequest,
    LeaseRequest,
    ReportRequest,
    SuggestRequest,
    WorkerRegistration,
)
from hpo.transport import ApiError, RetryPolicies
from tests.support import LiveApp, live_app, study_spec

TOY = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live_app(tmp_path_factory.mktemp("client")) as server:
        yield server


def client(live: LiveApp, role: str = "admin") -> hpo.Client:
    return hpo.Client(live.url, getattr(live.tokens, role), policies=RetryPolicies.interactive())


def run_trials(live: LiveApp, study: str, count: int) -> list[float]:
    """Lease, report and complete ``count`` trials through the client, as a worker does."""
    values = []
    with client(live, "worker") as worker:
        info = worker.register(WorkerRegistration(hostname="box", workloads=["toy"]))
        for _ in range(count):
            spec = worker.lease(LeaseRequest(worker_id=info.worker_id, studies=[study])).trial
            assert spec is not None
            x = spec.params["x"]
            answer = worker.report(spec.lease_id, ReportRequest(step=1, value=x))
            assert answer.action == "continue"
            worker.complete(spec.lease_id, CompleteRequest(value=x, metrics={"double": 2 * x}))
            values.append(x)
    return values


def test_studies_from_a_dict_a_spec_object_and_a_yaml_file(live: LiveApp, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study_spec("from-yaml", workload="toy", space=TOY)))
    with client(live) as api:
        made = [
            api.create_study(study_spec("from-dict", workload="toy", space=TOY)),
            api.create_study(hpo.StudySpec.model_validate(study_spec("from-spec"))),
            api.create_study(path),
        ]
        assert [s.name for s in made] == ["from-dict", "from-spec", "from-yaml"]
        assert api.get_study("from-spec").sampler == "random"
        assert api.get_study(made[0].study_id).name == "from-dict"  # by id
        names = [s.name for s in api.list_studies(limit=500).items]
        assert {"from-dict", "from-spec", "from-yaml"} <= set(names)
        assert api.pause("from-dict").state == "paused"
        assert api.resume("from-dict").state == "running"
        assert api.stop("from-dict").state == "stopped"
        api.delete_study("from-dict")
        with pytest.raises(ApiError) as missing:
            api.get_study("from-dict")
    assert missing.value.status_code == 404 and "not found" in missing.value.detail


def test_trials_best_dataframe_export_and_wait(live: LiveApp) -> None:
    with client(live) as api:
        api.create_study(study_spec("runs", workload="toy", space=TOY, budget={"max_trials": 4}))
        values = run_trials(live, "runs", 4)
        trials = list(api.trials("runs"))
        assert [t.value for t in trials] == values and [t.number for t in trials] == [0, 1, 2, 3]
        assert [t.number for t in api.trials("runs", state="complete")] == [0, 1, 2, 3]
        detail = api.trial("runs", 2)
        assert detail.intermediate_values[0].value == values[2]
        [best] = api.best_trials("runs")
        assert best.value == max(values)
        frame = api.to_dataframe("runs")
        assert list(frame["params_x"]) == values and list(frame["state"]) == ["complete"] * 4
        chunks: list[bytes] = []
        api.export("runs", chunks.append, "csv")
        assert b"".join(chunks).decode().splitlines()[0].startswith("number,trial_id,state,value")
        chunks.clear()
        api.export("runs", chunks.append, "json")
        assert len(json.loads(b"".join(chunks))["trials"]) == 4
        done = api.wait("runs", timeout_s=10, poll_s=0.1, progress=True)
        assert done.counts.complete == 4


def test_wait_times_out_while_trials_remain(live: LiveApp) -> None:
    with client(live) as api:
        api.create_study(
            study_spec("unfinished", workload="toy", space=TOY, budget={"max_trials": 3})
        )
        with pytest.raises(TimeoutError, match="unfinished"):
            api.wait("unfinished", timeout_s=0.3, poll_s=0.1, progress=False)


def test_define_by_run_suggest_through_the_client(live: LiveApp) -> None:
    with client(live) as api:
        api.create_study(study_spec("dbr-client", workload="toy", space={}))
    with client(live, "worker") as worker:
        info = worker.register(WorkerRegistration(hostname="box", workloads=["toy"]))
        spec = worker.lease(LeaseRequest(worker_id=info.worker_id, studies=["dbr-client"])).trial
        assert spec is not None and spec.params == {} and spec.space is None
        body = SuggestRequest(
            name="lr", distribution={"type": "float", "low": 1e-4, "high": 1, "log": True}
        )
        first = worker.suggest(spec.lease_id, body).value
        assert worker.suggest(spec.lease_id, body).value == first  # recorded, not sampled again
        other = SuggestRequest(name="lr", distribution={"type": "int", "low": 1, "high": 3})
        with pytest.raises(ApiError) as clash:
            worker.suggest(spec.lease_id, other)
        assert clash.value.status_code == 422 and "distribution" in clash.value.detail
        worker.complete(spec.lease_id, CompleteRequest(value=first))
    with client(live) as api:
        assert api.trial("dbr-client", 0).params == {"lr": first}


def test_cli_listings_in_json(live: LiveApp) -> None:
    env = {"HPO_SERVER": live.url, "HPO_TOKEN": live.tokens.admin, "HPO_TOKEN_FILE": None}
    runner = CliRunner()
    with client(live) as api:
        api.create_study(
            study_spec("cli-json", workload="toy", space=TOY, budget={"max_trials": 2})
        )
    run_trials(live, "cli-json", 2)
    listed = runner.invoke(study_app, ["list", "--format", "json", "--limit", "500"], env=env)
    shown = runner.invoke(study_app, ["show", "cli-json", "--format", "json"], env=env)
    trials = runner.invoke(study_app, ["trials", "cli-json", "--format", "json"], env=env)
    assert listed.exit_code == shown.exit_code == trials.exit_code == 0, listed.output
    assert "cli-json" in [s["name"] for s in json.loads(listed.stdout)["items"]]
    assert json.loads(shown.stdout)["counts"]["complete"] == 2
    assert [t["number"] for t in json.loads(trials.stdout)] == [0, 1]
    table = runner.invoke(study_app, ["trials", "cli-json"], env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0 and "complete" in table.stdout
