"""The dashboard's artifacts and preemptions: the trial page lists a trial's checkpoints,
model and files with download links, the study page shows the bytes its artifacts
hold, and a preempted trial says so on its page and in the trials table. The
artifacts are made through the real API (a lease, uploads, a preempted give-back)."""

from __future__ import annotations

import functools
import re
from typing import Any

import optuna

from service.dashboard.artifacts_view import size_text
from tests.conftest import Tokens
from tests.service.lease_helpers import Worker, create_study, upload_artifact


def preempted_trial_with_artifacts(client: Any, tokens: Tokens) -> dict[str, Any]:
    """Study ``s1``: its trial 0 preempted once, then two checkpoints, a model and a file
    uploaded and completed; the ``ArtifactInfo`` of each upload by name."""
    study = create_study(client, tokens)
    worker = Worker(client, tokens.worker)
    trial = worker.trial()
    preempt = {"reason": "SIGTERM", "retry": True, "preempted": True}
    assert worker.ok(trial["lease_id"], "fail", preempt)["state"] == "queued"
    trial = worker.trial()
    lease = trial["lease_id"]
    upload = functools.partial(upload_artifact, worker, lease)
    uploads = {
        "ckpt-1": upload(b"a" * 1500, kind="checkpoint", step=1, filename="c.tar"),
        "ckpt-2": upload(b"b" * 2500, kind="checkpoint", step=2, filename="c.tar"),
        "model": upload(b"weights" * 100, kind="model", filename="model.pt"),
        "file": upload(b"<b>notes</b>", filename="<notes>.txt"),
    }
    worker.ok(lease, "complete", {"value": 0.9})
    return {"study_id": study["study_id"], "trial": trial, "uploads": uploads}


def test_trial_page_lists_artifacts_with_download_links(client, tokens) -> None:
    made = preempted_trial_with_artifacts(client, tokens)
    client.headers.update(Tokens.header(tokens.viewer))
    page = client.get(f"/dashboard/studies/{made['study_id']}/trials/0")
    assert page.status_code == 200, page.text
    html = page.text
    section = html[
        html.index('id="artifacts"') : html.index("</section>", html.index('id="artifacts"'))
    ]
    rows = re.findall(r'<tr data-kind="(\w+)">(.*?)</tr>', section, re.S)
    # checkpoints by step, then the model, then other files
    assert [kind for kind, _ in rows] == ["checkpoint", "checkpoint", "model", "file"]
    order = ["ckpt-1", "ckpt-2", "model", "file"]
    for (_, cells), name in zip(rows, order, strict=True):
        info = made["uploads"][name]
        assert f'href="/api/v1/artifacts/{info["artifact_id"]}" download' in cells
        assert size_text(info["size"]) in cells
    assert ">1<" in rows[0][1] and ">2<" in rows[1][1]  # the checkpoints' steps
    assert "1.5 kB" in rows[0][1] and "700 bytes" in rows[2][1]
    assert "&lt;notes&gt;.txt" in rows[3][1] and "<notes>" not in section  # escaped
    assert "4 files · 4.7 kB" in section  # count and bytes (1500 + 2500 + 700 + 12)
    # The link downloads the file with the viewer's credentials (the page's cookie).
    model = made["uploads"]["model"]
    got = client.get(f"/api/v1/artifacts/{model['artifact_id']}")
    assert got.status_code == 200 and got.content == b"weights" * 100
    assert 'filename="model.pt"' in got.headers["content-disposition"]
    # The preemption beside the attempts.
    assert re.search(r'id="attempts">2\s*<span class="badge preempted"[^>]*>preempted ×1<', html)


def test_a_trial_without_artifacts_says_so(client, tokens) -> None:
    study = create_study(client, tokens)
    Worker(client, tokens.worker).trial()
    client.headers.update(Tokens.header(tokens.viewer))
    html = client.get(f"/dashboard/studies/{study['study_id']}/trials/0").text
    assert 'id="no-artifacts"' in html and "badge preempted" not in html


def test_study_page_and_trials_table_show_bytes_and_preemptions(client, tokens) -> None:
    made = preempted_trial_with_artifacts(client, tokens)
    client.headers.update(Tokens.header(tokens.viewer))
    html = client.get(f"/dashboard/studies/{made['study_id']}").text
    stored = re.search(
        r'<dd id="stored-bytes" data-url="([^"]+)" title="([^"]+)">([^<]+)</dd>', html
    )
    assert stored is not None, html
    url, title, text = stored.groups()
    assert url == f"/api/v1/studies/{made['study_id']}/artifacts"
    assert text == "4.7 kB" and title == "4,712 bytes in 4 files"
    assert "checkpoint 4.0 kB, file 12 bytes, model 700 bytes" in html
    held = client.get(url).json()["bytes"]  # what the page refreshes it from
    assert held["total"] == 4712 and held["count"] == 4

    table = client.get(f"/api/v1/dashboard/studies/{made['study_id']}/trials").json()
    [row] = [r for r in table["rows"] if r["number"] == 0]
    assert row["preemptions"] == 1 and row["attempts"] == 2 and row["state"] == "complete"


def test_a_study_made_outside_the_service_lists_optuna_uploads(
    client, tokens, ctx, tmp_path
) -> None:
    """Plain Optuna code: a study, a trial and an artifact uploaded with
    ``optuna.artifacts``; the service has no row of any of them."""
    study = optuna.create_study(study_name="plain-optuna", storage=ctx.store.storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    source = tmp_path / "plot.png"
    source.write_bytes(b"png")
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=ctx.artifacts,
        file_path=str(source),
        study_or_trial=trial,
        storage=ctx.store.storage,
    )
    study.tell(trial, 0.5)
    client.headers.update(Tokens.header(tokens.viewer))
    [listed] = client.get(f"/api/v1/trials/{trial._trial_id}/artifacts").json()
    assert listed["study_name"] == "plain-optuna" and listed["source"] == "optuna"
    html = client.get(f"/dashboard/studies/{study._study_id}/trials/0").text
    assert f'href="/api/v1/artifacts/{artifact_id}" download>plot.png</a>' in html
    assert "(optuna)" in html
    assert 'id="stored-bytes"' not in client.get(f"/dashboard/studies/{study._study_id}").text
