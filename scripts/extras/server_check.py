"""Run inside a venv with only the server extra: the dashboard and every sampler work.

    python server_check.py URL ADMIN_TOKEN WORKER_TOKEN

For each sampler of the spec schema, a study is created and more trials than
the sampler's start-up trials are leased and completed through the trial
protocol (``hpo.Client``), so a sampler that imports a missing package once its
start-up phase is over shows up here. A sampler refused at creation must say
why (422). Exits 1 with the first problem.
"""

from __future__ import annotations

import sys

import httpx

from hpo import Client
from hpo.protocol import CompleteRequest, LeaseRequest, WorkerRegistration
from hpo.spec import SAMPLERS
from hpo.transport import ApiError

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1},
    "k": {"type": "int", "low": 1, "high": 4},
    "c": {"type": "categorical", "choices": ["a", "b"]},
}
#: Small start-up phases so the sampler's own model runs within a dozen trials.
OPTIONS = {
    "tpe": {"n_startup_trials": 4},
    "gp": {"n_startup_trials": 4},
    "cmaes": {"n_startup_trials": 2},
    "nsga2": {"population_size": 4},
    "qmc": {},
    "random": {},
    "grid": {},
}
TRIALS = 10


def check_sampler(admin: Client, worker: Client, worker_id: str, name: str) -> str:
    spec = {
        "name": f"extra-{name}",
        "workload": "toy",
        "sampler": {"name": name, "seed": 1, "options": OPTIONS[name]},
        "objective": "value",
        "budget": {"max_trials": TRIALS},
        "space": SPACE,
    }
    try:
        admin.create_study(spec)
    except ApiError as exc:
        if exc.status_code == 422 and "not installed" in exc.detail:
            return f"refused at creation: {exc.detail}"
        raise
    for i in range(TRIALS):
        answer = worker.lease(LeaseRequest(worker_id=worker_id, studies=[spec["name"]]))
        if answer.trial is None:
            raise SystemExit(f"sampler {name}: no trial {i}: {answer.reason}")
        value = float(answer.trial.params["x"]) + answer.trial.params["k"]
        worker.complete(answer.trial.lease_id, CompleteRequest(value=value))
    return f"{TRIALS} trials leased and completed"


def main() -> None:
    url, admin_token, worker_token = sys.argv[1:4]
    login = httpx.get(f"{url}/dashboard/login")
    if login.status_code != 200:
        raise SystemExit(f"/dashboard/login answered {login.status_code}")
    # The installed package carries its static files, the vendored plotly.js included.
    for asset in ("app.js", "lib.js", "style.css", "plotly.min.js", "plotly-cartesian.min.js"):
        got = httpx.get(f"{url}/dashboard/static/{asset}")
        if got.status_code != 200 or not got.content:
            raise SystemExit(f"/dashboard/static/{asset} answered {got.status_code}")
    admin, worker = Client(url, admin_token), Client(url, worker_token)
    worker_id = worker.register(WorkerRegistration(hostname="check", workloads=["toy"])).worker_id
    for name in SAMPLERS:
        print(f"server extra: sampler {name}: {check_sampler(admin, worker, worker_id, name)}")


if __name__ == "__main__":
    main()
