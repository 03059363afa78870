"""Uploads through a lease and downloads, streamed with bounded memory and hash-checked.

An upload is spooled to a file on the server's disk while its SHA-256 is computed
(a chunk at a time, whatever the size), checked against the sender's hash, written
to the artifact store, given Optuna's metadata, and only then committed as a
``hpo_artifacts`` row. A cut-off upload therefore never becomes anything: its
spool file is removed and no row exists, so it never becomes "the latest".
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import tempfile
import uuid
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.protocol import ArtifactInfo, ArtifactKind, Checkpoint
from service.artifacts import records
from service.artifacts.records import ARTIFACT_PREFIX, BAD, COMMITTED
from service.artifacts.retention import prune_running_without_commit, remove_files
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import (
    ArtifactNotFound,
    Conflict,
    InvalidRequest,
    LeaseExpired,
    TooLarge,
)
from service.storage import optuna_rows
from service.storage.models import ArtifactRecord
from service.trials.rows import LeaseView, check_current, load_lease_without_commit, study_spec
from service.trials.states import LeaseState, TrialState

log = logging.getLogger("hpo.artifacts")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Received:
    """An upload spooled to disk."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Upload:
    """What the uploader says the file is."""

    kind: ArtifactKind
    filename: str
    step: int | None = None
    sha256: str | None = None
    #: the id the uploader chose (Optuna's ``upload_artifact`` makes one); None: a new uuid
    artifact_id: str | None = None


async def receive(body: AsyncIterable[bytes], max_bytes: int) -> Received:
    """Spool ``body`` to a temporary file, hashing it; TooLarge past ``max_bytes``."""
    digest, size = hashlib.sha256(), 0
    spool = tempfile.NamedTemporaryFile(prefix="hpo-upload-", delete=False)  # noqa: SIM115
    try:
        with spool:
            async for chunk in body:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(
                        f"artifact larger than {max_bytes} bytes (HPO_MAX_ARTIFACT_BYTES)", "body"
                    )
                digest.update(chunk)
                spool.write(chunk)
    except BaseException:
        Path(spool.name).unlink(missing_ok=True)
        raise
    return Received(Path(spool.name), size, digest.hexdigest())


def check_lease(ctx: AppContext, lease_id: str) -> None:
    """Refuse an upload before its body is read: the lease must be its trial's live one."""
    with ctx.db.session() as session:
        _live_lease_without_commit(session, lease_id)


def _live_lease_without_commit(session: Session, lease_id: str) -> LeaseView:
    view = load_lease_without_commit(session, lease_id)
    check_current(view)
    if view.lease.state not in (LeaseState.ACTIVE, LeaseState.EXPIRED):
        raise LeaseExpired(f"lease {lease_id} is {view.lease.state}", "lease_id")
    if view.trial.state == TrialState.FINISHED or view.trial.optuna_trial_id is None:
        raise LeaseExpired(f"{view.label} is finished", "lease_id")
    return view


def commit_upload(
    ctx: AppContext, lease_id: str, received: Received, upload: Upload
) -> ArtifactInfo:
    """Store a spooled upload as an artifact of the lease's trial (see the module doc)."""
    if upload.sha256 is not None and upload.sha256.lower() != received.sha256:
        raise InvalidRequest(
            f"sha256: the upload's hash is {received.sha256}, the sender said {upload.sha256}",
            "sha256",
        )
    with ctx.db.session() as session:
        view = _live_lease_without_commit(session, lease_id)
        if upload.artifact_id is not None:
            stored = _stored_as_without_commit(session, upload.artifact_id, view, received)
            if stored is not None:  # a retry of an upload that was stored: the same answer
                return records.info(stored, view.study.name, view.trial.number)
    trial_id = view.trial.optuna_trial_id
    assert trial_id is not None
    record = _new_record(view, received, upload, trial_id)
    with received.path.open("rb") as body:
        ctx.artifacts.write(record.artifact_id, body)
    try:  # Optuna's own metadata, through Optuna (its connection, not our transaction)
        ctx.store.storage.set_trial_system_attr(
            trial_id, ARTIFACT_PREFIX + record.artifact_id, records.optuna_meta(record)
        )
        dropped = _commit_row(ctx, lease_id, record)
    except BaseException:
        remove_files(ctx, [record])
        raise
    remove_files(ctx, dropped)
    return records.info(record, view.study.name, view.trial.number)


def _stored_as_without_commit(
    session: Session, artifact_id: str, view: LeaseView, received: Received
) -> ArtifactRecord | None:
    """The row already stored under a chosen ``artifact_id``: the same file of the same
    trial (a retry) or None when the id is free; Conflict when it is another's."""
    row = session.scalars(
        select(ArtifactRecord).where(ArtifactRecord.artifact_id == artifact_id)
    ).first()
    if row is None:
        return None
    if row.optuna_trial_id == view.trial.optuna_trial_id and row.sha256 == received.sha256:
        return row
    raise Conflict(f"artifact_id: {artifact_id!r} is taken by another file", "artifact_id")


def _new_record(
    view: LeaseView, received: Received, upload: Upload, trial_id: int
) -> ArtifactRecord:
    mimetype = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
    return ArtifactRecord(
        artifact_id=upload.artifact_id or str(uuid.uuid4()),
        study_id=view.study.study_id,
        optuna_trial_id=trial_id,
        lease_id=view.lease.lease_id,
        kind=upload.kind,
        step=upload.step,
        filename=upload.filename,
        mimetype=mimetype,
        size=received.size,
        sha256=received.sha256,
        state=COMMITTED,
        created_at=utcnow(),
    )


def _commit_row(ctx: AppContext, lease_id: str, record: ArtifactRecord) -> list[ArtifactRecord]:
    """The commit: the lease is checked again (it may have been lost meanwhile), the row
    inserted, and a running trial's older checkpoints past ``keep_checkpoints`` dropped."""
    with ctx.db.session() as session:
        view = _live_lease_without_commit(session, lease_id)
        session.add(record)
        session.flush()
        if record.kind != ArtifactKind.CHECKPOINT:
            return []
        keep = study_spec(view.study).retention.keep_checkpoints
        assert record.optuna_trial_id is not None
        return prune_running_without_commit(session, record.optuna_trial_id, keep)


def reject_checkpoint(
    ctx: AppContext, lease_id: str, artifact_id: str, reason: str
) -> Checkpoint | None:
    """A worker could not use a checkpoint: mark it bad; the one before it (or None)."""
    with ctx.db.session() as session:
        view = _live_lease_without_commit(session, lease_id)
        row = records.get_without_commit(session, artifact_id)
        if row.optuna_trial_id != view.trial.optuna_trial_id:
            raise ArtifactNotFound(f"artifact {artifact_id!r} is not this trial's", "artifact_id")
        row.state = BAD
        log.warning("%s: checkpoint %s rejected: %s", view.label, artifact_id, reason)
        session.flush()
        assert view.trial.optuna_trial_id is not None
        return records.latest_checkpoint_without_commit(session, view.trial.optuna_trial_id)


# --------------------------------------------------------------------------- downloads


@dataclass(frozen=True)
class Download:
    """What a download answers: the file's name, type, size and hash (when known)."""

    artifact_id: str
    filename: str
    mimetype: str
    size: int | None
    sha256: str | None


def find(ctx: AppContext, artifact_id: str) -> Download:
    """Our committed (or bad) artifact, or one that plain Optuna code uploaded."""
    with ctx.db.session() as session:
        row = records.live_row_without_commit(session, artifact_id)
        if row is not None:
            return Download(row.artifact_id, row.filename, row.mimetype, row.size, row.sha256)
        meta = optuna_rows.artifact_meta(session, ARTIFACT_PREFIX + artifact_id)
    if meta is None:
        raise ArtifactNotFound(f"artifact {artifact_id!r} not found", "artifact_id")
    filename = str(meta.get("filename") or artifact_id)
    mimetype = str(meta.get("mimetype") or "application/octet-stream")
    return Download(artifact_id, filename, mimetype, None, None)


def open_reader(ctx: AppContext, artifact_id: str) -> BinaryIO:
    """The store's reader (ArtifactNotFound when the file is gone)."""
    from service.artifacts.store import ArtifactNotFound as StoreMissing

    try:
        return ctx.artifacts.open_reader(artifact_id)
    except StoreMissing as exc:
        raise ArtifactNotFound(f"artifact {artifact_id!r}: file missing", "artifact_id") from exc


def chunks(reader: BinaryIO) -> Iterator[bytes]:
    """The reader's bytes, a MiB at a time; closes it at the end."""
    try:
        while chunk := reader.read(CHUNK):
            yield chunk
    finally:
        reader.close()
