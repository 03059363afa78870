"""The truth at a glance (issue 26): a real study run to completion by a real worker
process against a real server process over HTTP, the dashboard open in Chromium all
along. Each study label the pages show is the API's, the open page reaches
``complete`` by itself (no reload), and the counts add up to the trials in Optuna.

Two runs of the same test: an Optuna-style objective (``--objective``, instant trials:
in the default suite) and, as the demo does, the reference trainer on real MNIST (a few
hundred images, 1 epoch: ``slow``, a minute on 2 busy cores)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from hpo.schemas import ShownState, StudyStatus, WaitingOn
from tests.dashboard.conftest import BROWSER_ARGS, chromium_path
from tests.e2e.conftest import Server, Stack, stack  # noqa: F401 - the fixture
from tests.support import wait_for

pytestmark = pytest.mark.browser

TRIALS = 3
MNIST = {
    "name": "labels",
    "direction": "maximize",
    "objective": "val_accuracy",
    "sampler": {"name": "random", "seed": 0},
    "budget": {"max_trials": TRIALS, "max_concurrent": 1},
    "fixed": {"epochs": 1, "train_subset": 300, "batch_size": 64, "hidden": 32},
    "space": {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    },
}
#: The same budget over an objective function of tests/e2e/objectives.py (define-by-run).
OBJECTIVE = {
    **{k: v for k, v in MNIST.items() if k != "fixed"},
    "workload": "toy",
    "objective": "value",
    "space": {},
}
RUNS = [
    pytest.param(
        OBJECTIVE,
        ["--objective", "tests.e2e.objectives:conditional", "--workload", "toy"],
        id="objective",
    ),
    pytest.param(MNIST, [], id="mnist", marks=pytest.mark.slow),
]
BADGE = "#study-status"


def _summary(server: Server, name: str) -> dict[str, Any]:
    answer = server.api().http.get(f"/studies/{name}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _label(summary: dict[str, Any]) -> tuple[str, str]:
    return summary["status"], summary.get("waiting_on") or ""


def _badge(tab: Any, selector: str = BADGE) -> tuple[str, str]:
    badge = tab.locator(selector)
    return badge.get_attribute("data-status") or "", badge.get_attribute("data-waiting-on") or ""


def _page_counts(tab: Any) -> dict[str, int]:
    return {s.value: int(tab.locator(f"[data-count={s.value}]").inner_text()) for s in ShownState}


@pytest.mark.parametrize(("spec", "worker_args"), RUNS)
def test_every_label_is_the_apis_and_the_counts_add_up(
    stack: Stack,  # noqa: F811
    spec: dict[str, Any],
    worker_args: list[str],
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    server = stack.server()
    admin = server.api()
    admin.create_study(spec)
    for name in ("labels-paused", "labels-stopped"):
        admin.create_study({**spec, "name": name})
    assert admin.http.post("/studies/labels-paused/pause").status_code == 200
    assert admin.http.post("/studies/labels-stopped/stop").status_code == 200
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        tab = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(f"{server.url}/dashboard/login")
        tab.fill("#token", server.tokens()["admin"])
        tab.click("button[type=submit]")
        tab.wait_for_url("**/dashboard/")
        study_id = _summary(server, "labels")["study_id"]
        tab.goto(f"{server.url}/dashboard/studies/{study_id}")
        # No worker yet: waiting, and the page says why.
        assert _label(_summary(server, "labels")) == (StudyStatus.WAITING, WaitingOn.NO_WORKERS)
        assert _badge(tab) == (StudyStatus.WAITING, WaitingOn.NO_WORKERS)

        token = server.tokens()["worker"]
        stack.worker(server.url, token, "--max-trials", str(TRIALS), *worker_args)
        wait_for(lambda: admin.finished("labels", TRIALS), 180, f"{TRIALS} finished trials")
        summary = wait_for(
            lambda: (s := _summary(server, "labels"))["status"] == StudyStatus.COMPLETE and s,
            30,
            "the API's label: complete",
        )
        # The page open all along gets there by itself (it polls), then agrees in full.
        tab.wait_for_function(
            f"s => document.querySelector('{BADGE}').dataset.status === s",
            arg=StudyStatus.COMPLETE.value,
            timeout=30_000,
        )
        assert tab.locator(BADGE).inner_text() == StudyStatus.COMPLETE.value
        counts = _page_counts(tab)
        api_counts = summary["counts"]
        assert counts == {s.value: api_counts[s.value] for s in ShownState}
        url = server.env["HPO_DATABASE_URL"]
        trials = optuna.load_study(study_name="labels", storage=url).get_trials(deepcopy=False)
        assert sum(counts.values()) == api_counts["total"] == len(trials) == TRIALS
        states = [(t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
        assert counts[ShownState.COMPLETE] + counts[ShownState.PRUNED] == TRIALS, states

        # The studies list: each row's label is the API's.
        tab.goto(f"{server.url}/dashboard/")
        tab.wait_for_selector("#studies-body tr")
        for name in ("labels", "labels-paused", "labels-stopped"):
            row = tab.locator("#studies-body tr", has_text=name).filter(
                has=tab.locator(f"a:text-is('{name}')")
            )
            assert _badge(row, "[data-status]") == _label(_summary(server, name)), name
        assert _label(_summary(server, "labels-paused"))[0] == StudyStatus.PAUSED
        assert _label(_summary(server, "labels-stopped"))[0] == StudyStatus.STOPPED
        assert errors == []
        browser.close()
