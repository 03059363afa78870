"""Artifacts in headless Chromium against a real uvicorn server (auth on): a trial that
was preempted once, then uploaded two checkpoints and its model through the real API,
shows them on its page with working download links (the sign-in cookie opens them),
and its study page shows the bytes held, refreshed live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import mint_tokens
from tests.dashboard.conftest import LiveServer, Watched
from tests.service.lease_helpers import Worker, create_study, upload_artifact

pytestmark = pytest.mark.browser
STUDY = "kept-artifacts"


@pytest.fixture(scope="module")
def worker(live_server: LiveServer) -> Iterator[Worker]:
    with httpx.Client(base_url=live_server.base, timeout=10) as http:
        tokens = mint_tokens(live_server.ctx)
        create_study(http, tokens, name=STUDY)
        yield Worker(http, tokens.worker)


def finish_with_model(worker: Worker, model: bytes, preempt: bool = False) -> dict[str, Any]:
    """Lease a trial of STUDY (preempted once first when ``preempt``), upload checkpoints
    of steps 1 and 2 (3,000 and 4,000 bytes) and ``model``, complete it; its TrialSpec."""
    trial = worker.trial(studies=[STUDY])
    if preempt:
        handed_back = {"reason": "SIGTERM", "retry": True, "preempted": True}
        assert worker.ok(trial["lease_id"], "fail", handed_back)["state"] == "queued"
        trial = worker.trial(studies=[STUDY])
    for step in (1, 2):
        upload_artifact(
            worker,
            trial["lease_id"],
            b"c" * (2000 + 1000 * step),
            kind="checkpoint",
            step=step,
            filename="state.tar",
        )
    upload_artifact(worker, trial["lease_id"], model, kind="model", filename="model.pt")
    worker.ok(trial["lease_id"], "complete", {"value": 0.9})
    return trial


def test_trial_page_lists_and_downloads_artifacts_and_the_study_shows_bytes(
    page: Watched, live_server: LiveServer, worker: Worker, tmp_path: Path
) -> None:
    model = bytes(range(200)) * 10  # 2,000 bytes
    trial = finish_with_model(worker, model, preempt=True)
    study_id = live_server.ctx.store.storage.get_study_id_from_name(STUDY)
    tab = page.page
    tab.goto(f"{live_server.base}/dashboard/studies/{study_id}/trials/{trial['trial_number']}")
    rows = tab.locator("#artifacts-table tbody tr")
    assert rows.count() == 3
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(3)]
    assert [c[0] for c in cells] == ["checkpoint", "checkpoint", "model"]
    assert [c[2] for c in cells] == ["1", "2", "—"]  # the checkpoints' steps
    assert [c[3] for c in cells] == ["3.0 kB", "4.0 kB", "2.0 kB"]
    assert "3 files · 9.0 kB" in tab.locator("#artifacts h2").inner_text()
    assert "preempted ×1" in tab.locator("#attempts").inner_text()
    tab.screenshot(path=str(tmp_path / "trial-artifacts.png"), full_page=True)

    with tab.expect_download() as started:
        rows.nth(2).locator("a", has_text="model.pt").click()
    download = started.value
    assert download.failure() is None
    assert download.suggested_filename == "model.pt"
    assert Path(download.path()).read_bytes() == model

    tab.goto(f"{live_server.base}/dashboard/studies/{study_id}")
    assert tab.locator("#stored-bytes").inner_text() == "9.0 kB"
    tab.screenshot(path=str(tmp_path / "study-bytes.png"))
    assert tab.locator("#stored-kinds").inner_text() == "checkpoint 7.0 kB, model 2.0 kB"
    tab.wait_for_selector("#trials-body .badge.preempted")
    assert tab.locator("#trials-body .badge.preempted").inner_text() == "preempted ×1"
    # Another trial keeps its artifacts: the figure follows without a reload.
    tab.wait_for_function("() => document.getElementById('live').className === 'live ok'")
    finish_with_model(worker, b"m" * 1000)
    tab.wait_for_function(
        "() => document.getElementById('stored-bytes').textContent === '17.0 kB'", timeout=20_000
    )
    assert tab.locator("#stored-kinds").inner_text() == "checkpoint 14.0 kB, model 3.0 kB"
    assert page.errors == [] and page.dialogs == []
