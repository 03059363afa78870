"""The artifact store named by ``HPO_ARTIFACT_STORE``: Optuna's file-system or Boto3 store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

__all__ = ["ArtifactNotFound", "ArtifactStore", "PrefixedStore", "open_store", "store_location"]

DEFAULT_FOLDER = "hpo-artifacts"


class ArtifactStore(Protocol):
    """Optuna's artifact-store interface (what ``optuna.artifacts`` calls)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class PrefixedStore:
    """Keys under ``prefix/`` in another store (``s3://bucket/prefix``).

    Optuna code that shares the bucket must wrap its own Boto3ArtifactStore the
    same way to read these artifacts.
    """

    def __init__(self, inner: ArtifactStore, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix.strip("/")

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))


def store_location(setting: str, database_url: str) -> str:
    """The store's URL: the setting, or a folder beside the SQLite file (else the cwd)."""
    if setting:
        return setting
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        db_file = Path(database_url.removeprefix("sqlite:///"))
        return (db_file.resolve().parent / DEFAULT_FOLDER).as_uri()
    return (Path.cwd() / DEFAULT_FOLDER).resolve().as_uri()


def open_store(location: str) -> ArtifactStore:
    """``file:///folder`` (created when missing) or ``s3://bucket[/prefix]``.

    S3: boto3 reads the usual AWS variables; ``AWS_ENDPOINT_URL`` points it at an
    S3-compatible server such as MinIO. Bodies are streamed from the spooled upload
    file, never copied into memory (``avoid_buf_copy``).
    """
    url = urlparse(location)
    if url.scheme == "file":
        folder = Path(unquote(url.path))
        folder.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(folder)
    if url.scheme == "s3":
        if not url.netloc:
            raise ValueError(f"HPO_ARTIFACT_STORE: {location!r} names no bucket (s3://bucket)")
        import boto3

        client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        store: ArtifactStore = Boto3ArtifactStore(url.netloc, client, avoid_buf_copy=True)
        prefix = url.path.strip("/")
        return PrefixedStore(store, prefix) if prefix else store
    raise ValueError(
        f"HPO_ARTIFACT_STORE: {location!r} is neither file:///folder nor s3://bucket[/prefix]"
    )
