"""Artifacts over HTTP on SQLite and PostgreSQL: uploads through a lease (hash-checked,
size-limited), downloads, Optuna's own metadata both ways, permissions, the latest
checkpoint handed to a re-run, rejection, retention and preempted give-backs."""

from __future__ import annotations

import asyncio
import hashlib

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from sqlalchemy import select

from hpo.protocol import SHA256_HEADER
from service.artifacts import transfer
from service.core.errors import TooLarge
from service.storage.models import ArtifactRecord
from tests.conftest import Tokens
from tests.service.lease_helpers import (
    API,
    Worker,
    artifact_listing,
    create_study,
    expire_and_reap,
    put_artifact,
    trial_rows,
)


def test_upload_download_and_optuna_sees_it(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    data = bytes(range(256)) * 5000  # 1.28 MB: larger than the JSON body limit
    answer = put_artifact(worker, trial["lease_id"], data, kind="checkpoint", step=1)
    assert answer.status_code == 201, answer.text
    info = answer.json()
    assert info["kind"] == "checkpoint" and info["step"] == 1 and info["size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    [listed] = artifact_listing(client, tokens, trial["trial_id"])
    assert listed["artifact_id"] == info["artifact_id"] and listed["source"] == "hpo"
    got = client.get(f"{API}/artifacts/{info['artifact_id']}", headers=Tokens.header(tokens.viewer))
    assert got.status_code == 200 and got.content == data
    assert got.headers[SHA256_HEADER] == info["sha256"]
    # Optuna's own API reads the metadata, and the file from the same store.
    frozen = ctx.store.storage.get_trial(trial["trial_id"])
    [meta] = get_all_artifact_meta(frozen, storage=ctx.store.storage)
    assert meta.artifact_id == info["artifact_id"] and meta.filename == "ckpt.tar"
    with ctx.artifacts.open_reader(meta.artifact_id) as reader:
        assert reader.read() == data


def test_optuna_uploads_show_up(client, tokens, ctx, worker: Worker, tmp_path) -> None:
    """An artifact that plain Optuna code uploads into the same database and store."""
    create_study(client, tokens)
    trial = worker.trial()
    source = tmp_path / "notes.txt"
    source.write_text("from optuna")
    frozen = ctx.store.storage.get_trial(trial["trial_id"])
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=ctx.artifacts,
        file_path=str(source),
        study_or_trial=frozen,
        storage=ctx.store.storage,
    )
    [listed] = artifact_listing(client, tokens, trial["trial_id"])
    assert listed["artifact_id"] == artifact_id and listed["source"] == "optuna"
    assert listed["filename"] == "notes.txt"
    got = client.get(f"{API}/artifacts/{artifact_id}", headers=Tokens.header(tokens.viewer))
    assert got.status_code == 200 and got.text == "from optuna"


def test_bad_hash_and_size_limit_store_nothing(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    wrong = put_artifact(worker, trial["lease_id"], b"abc", sha="0" * 64, kind="checkpoint", step=1)
    assert wrong.status_code == 422 and wrong.json()["field"] == "sha256"
    ctx.settings.max_artifact_bytes = 1000
    big = put_artifact(worker, trial["lease_id"], b"x" * 5000, kind="checkpoint", step=1)
    assert big.status_code == 413, big.text
    assert "1000 bytes" in big.json()["detail"]
    assert artifact_listing(client, tokens, trial["trial_id"]) == []
    with ctx.db.session() as session:
        assert session.scalars(select(ArtifactRecord)).all() == []


def test_cut_off_upload_leaves_no_spool_file() -> None:
    async def body():  # type: ignore[no-untyped-def]
        yield b"x" * 100
        raise ConnectionResetError("client went away")

    before = set(_spools())
    with pytest.raises(ConnectionResetError):
        asyncio.run(transfer.receive(body(), 10_000))
    with pytest.raises(TooLarge):
        asyncio.run(transfer.receive(_agen([b"y" * 600, b"y" * 600]), 1000))
    assert set(_spools()) == before


async def _agen(chunks):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        yield chunk


def _spools() -> list[str]:
    import glob
    import tempfile

    return glob.glob(f"{tempfile.gettempdir()}/hpo-upload-*")


def test_permissions(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    viewer = Worker(client, tokens.worker, worker_id=worker.worker_id)
    viewer.headers = Tokens.header(tokens.viewer)
    assert put_artifact(viewer, trial["lease_id"], b"abc").status_code == 403
    info = put_artifact(worker, trial["lease_id"], b"abc").json()
    url = f"{API}/artifacts/{info['artifact_id']}"
    assert client.delete(url, headers=Tokens.header(tokens.worker)).status_code == 403
    assert client.delete(url, headers=Tokens.header(tokens.viewer)).status_code == 403
    assert client.delete(url, headers=Tokens.header(tokens.admin)).status_code == 204
    assert artifact_listing(client, tokens, trial["trial_id"]) == []
    assert client.get(url, headers=Tokens.header(tokens.viewer)).status_code == 404
    frozen = ctx.store.storage.get_trial(trial["trial_id"])
    assert get_all_artifact_meta(frozen, storage=ctx.store.storage) == []


def test_stale_lease_cannot_upload(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    first = worker.trial()
    expire_and_reap(ctx, first["lease_id"])
    again = worker.trial()
    assert again["trial_id"] == first["trial_id"] and again["attempt"] == 2
    assert put_artifact(worker, first["lease_id"], b"late").status_code == 409
    assert put_artifact(worker, "no-such-lease", b"x").status_code == 404


def test_rerun_resumes_from_the_latest_of_two_kept(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens)
    trial = worker.trial()
    assert trial["resume"] is None
    ids = [
        put_artifact(
            worker, trial["lease_id"], f"state {i}".encode(), kind="checkpoint", step=i
        ).json()
        for i in (1, 2, 3)
    ]
    kept = [a["artifact_id"] for a in artifact_listing(client, tokens, trial["trial_id"])]
    assert kept == [ids[1]["artifact_id"], ids[2]["artifact_id"]]  # keep_checkpoints: 2
    expire_and_reap(ctx, trial["lease_id"])
    again = worker.trial()
    assert again["resume"]["artifact_id"] == ids[2]["artifact_id"]
    assert again["resume"]["step"] == 3
    # The worker cannot read it: the answer is the one before, then none.
    body = {"artifact_id": ids[2]["artifact_id"], "reason": "truncated"}
    assert worker.ok(again["lease_id"], "resume", body)["resume"]["step"] == 2
    body = {"artifact_id": ids[1]["artifact_id"], "reason": "truncated too"}
    assert worker.ok(again["lease_id"], "resume", body)["resume"] is None


def test_preempted_is_not_a_retry(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens, budget={"max_trials": 5, "max_retries": 0})
    trial = worker.trial()
    body = {"reason": "SIGTERM", "retry": True, "preempted": True}
    for _ in range(3):  # preempted again and again: never failed, never counted
        assert worker.ok(trial["lease_id"], "fail", body)["state"] == "queued"
        trial = worker.trial()
    [row] = trial_rows(ctx, "s1")
    assert row.preemptions == 3 and row.attempts == 4
    plain = {"reason": "device lost", "retry": True}
    assert worker.ok(trial["lease_id"], "fail", plain)["state"] == "fail"  # max_retries 0


def test_gc_keeps_the_best_trials_final_checkpoint(client, tokens, ctx, worker: Worker) -> None:
    create_study(client, tokens, retention={"keep_checkpoints": 2, "keep_best": 1})
    done = []
    for value in (0.5, 0.9, 0.7):
        trial = worker.trial()
        for step in (1, 2):
            put_artifact(worker, trial["lease_id"], b"s" * 100 * step, kind="checkpoint", step=step)
        put_artifact(worker, trial["lease_id"], b"model", kind="model", filename="model.pt")
        worker.ok(trial["lease_id"], "complete", {"value": value})
        done.append(trial)
    held = client.get(f"{API}/studies/s1/artifacts", headers=Tokens.header(tokens.viewer))
    assert held.json()["bytes"]["checkpoint"] == 3 * 300
    answer = client.post(f"{API}/studies/s1/gc", headers=Tokens.header(tokens.admin))
    assert answer.status_code == 200, answer.text
    assert answer.json()["deleted"] == 5 and answer.json()["freed_bytes"] == 100 + 2 * 300
    for trial, value in zip(done, (0.5, 0.9, 0.7), strict=True):
        kinds = sorted(
            (a["kind"], a["step"]) for a in artifact_listing(client, tokens, trial["trial_id"])
        )
        want = [("checkpoint", 2), ("model", None)] if value == 0.9 else [("model", None)]
        assert kinds == sorted(want, key=str), (value, kinds)
    held = client.get(f"{API}/studies/s1/artifacts", headers=Tokens.header(tokens.viewer))
    assert held.json()["bytes"]["checkpoint"] == 200
    assert (
        client.post(f"{API}/studies/s1/gc", headers=Tokens.header(tokens.worker)).status_code == 403
    )


def test_default_store_is_a_folder_beside_the_sqlite_file(tmp_path) -> None:
    from service.artifacts.store import open_store, store_location

    url = f"sqlite:///{tmp_path / 'sub' / 'hpo.db'}"
    store = open_store(store_location("", url))
    assert isinstance(store, FileSystemArtifactStore)
    assert (tmp_path / "sub" / "hpo-artifacts").is_dir()
    other = tmp_path / "elsewhere"
    assert store_location(other.as_uri(), url) == other.as_uri()
    with pytest.raises(ValueError, match="neither file"):
        open_store("ftp://x/y")
