"""Artifacts in an S3 store (``HPO_ARTIFACT_STORE=s3://bucket/prefix``) against a real S3
endpoint: moto in server mode, started here on a free port and spoken to over HTTP by the
server's boto3 client, as MinIO would be. On SQLite and PostgreSQL.

Uploads through a lease land in the bucket under the prefix (a file larger than boto3's
multipart threshold, so the multipart path runs too), the API lists and streams them back
hash-checked, Optuna's own ``get_all_artifact_meta`` / ``Boto3ArtifactStore`` /
``download_artifact`` see and read them, plain Optuna uploads into the bucket show up in
the API, and deletion (admin DELETE, retention) removes the objects from the bucket.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import optuna
import pytest
from moto.server import ThreadedMotoServer
from optuna.artifacts import Boto3ArtifactStore, download_artifact, get_all_artifact_meta

from hpo.protocol import SHA256_HEADER
from service.artifacts.store import PrefixedStore
from tests.conftest import Tokens, make_settings
from tests.service.lease_helpers import (
    API,
    Worker,
    artifact_listing,
    create_study,
    put_artifact,
)

PREFIX = "team-a/hpo"
#: Larger than boto3's multipart threshold (8 MiB): the upload goes in parts.
BIG = 9 * 1024 * 1024 + 123


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint: moto's server on a free port of this machine."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def prefix() -> str:
    """The key prefix of ``HPO_ARTIFACT_STORE`` (parametrize with "" for none)."""
    return PREFIX


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket, and the AWS variables the server's boto3 client reads."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hpo-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hpo-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Nothing from this machine's own AWS set-up.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    name = f"hpo-{uuid.uuid4().hex[:16]}"
    _s3().create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(db_url: str, tmp_path: Path, bucket: str, prefix: str):  # type: ignore[no-untyped-def]
    """The conftest's settings with the S3 store (the app fixture builds the server)."""
    location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return make_settings(db_url, tmp_path, artifact_store=location)


def _s3() -> Any:
    """A boto3 client of the test's own, on the same endpoint and credentials."""
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def _keys(bucket: str, prefix: str = "") -> dict[str, int]:
    """Key -> size of every object in the bucket under ``prefix``."""
    pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}


def _optuna_store(bucket: str, prefix: str) -> Any:
    """What plain Optuna code uses to read the service's store: Optuna's Boto3 store (its
    own boto3 client, from the AWS variables), wrapped in the same prefix."""
    store = Boto3ArtifactStore(bucket)
    return PrefixedStore(store, prefix) if prefix else store


def _key(prefix: str, artifact_id: str) -> str:
    return f"{prefix}/{artifact_id}" if prefix else artifact_id


def test_the_server_uses_the_s3_store(ctx, bucket: str) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(ctx.artifacts, PrefixedStore) and ctx.artifacts.prefix == PREFIX
    assert isinstance(ctx.artifacts.inner, Boto3ArtifactStore)
    assert ctx.artifacts.inner.bucket == bucket
    assert _keys(bucket) == {}


def test_checkpoint_round_trip_through_s3(  # type: ignore[no-untyped-def]
    client, tokens: Tokens, ctx, bucket: str, tmp_path: Path
) -> None:
    create_study(client, tokens)
    worker = Worker(client, tokens.worker)
    trial = worker.trial()
    data = random.Random(21).randbytes(BIG)
    sha = hashlib.sha256(data).hexdigest()
    answer = put_artifact(worker, trial["lease_id"], data, kind="checkpoint", step=3)
    assert answer.status_code == 201, answer.text
    info = answer.json()
    artifact_id = info["artifact_id"]
    assert (info["kind"], info["step"], info["size"], info["sha256"]) == (
        "checkpoint",
        3,
        len(data),
        sha,
    )

    # Listed, and streamed back whole with its hash.
    [listed] = artifact_listing(client, tokens, trial["trial_id"])
    assert listed["artifact_id"] == artifact_id and listed["source"] == "hpo"
    assert listed["size"] == len(data) and listed["sha256"] == sha
    viewer = Tokens.header(tokens.viewer)
    got = client.get(f"{API}/artifacts/{artifact_id}", headers=viewer)
    assert got.status_code == 200, got.text
    assert got.headers[SHA256_HEADER] == sha
    assert len(got.content) == len(data) and hashlib.sha256(got.content).hexdigest() == sha
    assert got.content == data

    # It really is in the bucket, under the prefix and nowhere else.
    key = f"{PREFIX}/{artifact_id}"
    assert _keys(bucket) == {key: len(data)}
    body = _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha

    # Optuna's own API: the metadata in the database, the file through Optuna's Boto3 store.
    frozen = ctx.store.storage.get_trial(trial["trial_id"])
    [meta] = get_all_artifact_meta(frozen, storage=ctx.store.storage)
    assert meta.artifact_id == artifact_id and meta.filename == "ckpt.tar"
    out = tmp_path / "from-optuna.tar"
    download_artifact(
        artifact_store=_optuna_store(bucket, PREFIX), file_path=str(out), artifact_id=artifact_id
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha

    # Only an admin deletes, and that removes the object from the bucket.
    url = f"{API}/artifacts/{artifact_id}"
    assert client.delete(url, headers=viewer).status_code == 403
    assert key in _keys(bucket)
    assert client.delete(url, headers=Tokens.header(tokens.admin)).status_code == 204
    assert _keys(bucket) == {}
    assert artifact_listing(client, tokens, trial["trial_id"]) == []
    assert client.get(url, headers=viewer).status_code == 404
    frozen = ctx.store.storage.get_trial(trial["trial_id"])
    assert get_all_artifact_meta(frozen, storage=ctx.store.storage) == []


@pytest.mark.parametrize("prefix", [PREFIX, ""], ids=["prefix", "no-prefix"])
def test_plain_optuna_uploads_into_the_bucket_show_up(  # type: ignore[no-untyped-def]
    client, tokens: Tokens, ctx, bucket: str, prefix: str, tmp_path: Path
) -> None:
    """Optuna code with its own Boto3ArtifactStore on the same bucket (and prefix), and
    the same database: the service lists and serves what it uploads. Without a prefix the
    keys are Optuna's artifact ids, so an unwrapped Boto3ArtifactStore reads the service's."""
    create_study(client, tokens)
    worker = Worker(client, tokens.worker)
    trial = worker.trial()
    source = tmp_path / "notes.txt"
    source.write_text("written by plain Optuna")
    frozen = ctx.store.storage.get_trial(trial["trial_id"])
    store = _optuna_store(bucket, prefix)
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=store,
        file_path=str(source),
        study_or_trial=frozen,
        storage=ctx.store.storage,
    )
    assert _keys(bucket) == {_key(prefix, artifact_id): source.stat().st_size}
    [listed] = artifact_listing(client, tokens, trial["trial_id"])
    assert listed["artifact_id"] == artifact_id and listed["source"] == "optuna"
    got = client.get(f"{API}/artifacts/{artifact_id}", headers=Tokens.header(tokens.viewer))
    assert got.status_code == 200 and got.text == "written by plain Optuna"
    # And the other way: the service's upload, read by that same Optuna store.
    info = put_artifact(worker, trial["lease_id"], b"from the service", filename="x.bin").json()
    assert _key(prefix, info["artifact_id"]) in _keys(bucket)
    with store.open_reader(info["artifact_id"]) as reader:
        assert reader.read() == b"from the service"


def test_retention_deletes_old_checkpoints_from_the_bucket(  # type: ignore[no-untyped-def]
    client, tokens: Tokens, bucket: str
) -> None:
    """A running trial keeps its latest keep_checkpoints (2): the oldest object goes."""
    create_study(client, tokens, retention={"keep_checkpoints": 2, "keep_best": 1})
    worker = Worker(client, tokens.worker)
    trial = worker.trial()
    ids = []
    for step in (1, 2, 3):
        answer = put_artifact(worker, trial["lease_id"], b"s" * step, kind="checkpoint", step=step)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["artifact_id"])
    assert set(_keys(bucket)) == {f"{PREFIX}/{i}" for i in ids[1:]}
