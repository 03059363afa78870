"""Artifacts: upload through a lease (workers), list and download (viewers), delete and
collect (admins). The domain lives in :mod:`service.artifacts`.

An upload is the file's raw bytes (``application/octet-stream``) with its SHA-256 in
the ``X-HPO-SHA256`` header; it streams to disk, so its size is bounded only by
``HPO_MAX_ARTIFACT_BYTES`` (413 past it), not by the server's memory.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from hpo.protocol import (
    SHA256_HEADER,
    ArtifactInfo,
    ArtifactKind,
    CheckpointRejected,
    ResumeAnswer,
)
from service.api.deps import AdminDep, ContextDep, ViewerDep, WorkerDep
from service.api.errors import error_responses
from service.artifacts import records, retention, transfer
from service.studies.export import content_disposition
from service.studies.records import get_study_record

router = APIRouter(tags=["artifacts"], responses=error_responses(401, 403))

#: Upload paths (the body-size middleware leaves their limit to ``max_artifact_bytes``).
UPLOAD_PATH = "/leases/{lease_id}/artifacts"
Filename = Annotated[
    str,
    Query(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$", description="the file's name"),
]
StudyRef = Annotated[str, Path(description="study name, or its integer id", max_length=512)]
ArtifactId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class StudyArtifacts(BaseModel):
    """Bytes a study's artifacts hold, per kind."""

    study: str
    bytes: dict[str, int]


class GcAnswer(BaseModel):
    """What a collection deleted."""

    study: str
    deleted: int
    freed_bytes: int
    kept_trials: int


@router.put(
    UPLOAD_PATH,
    status_code=201,
    response_model=ArtifactInfo,
    responses=error_responses(404, 409, 413, 422),
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def upload_artifact(
    lease_id: str,
    request: Request,
    ctx: ContextDep,
    _: WorkerDep,
    filename: Filename,
    kind: Annotated[ArtifactKind, Query()] = ArtifactKind.FILE,
    step: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    sha256: Annotated[str | None, Header(alias=SHA256_HEADER, pattern=r"^[0-9a-fA-F]{64}$")] = None,
    artifact_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9._-]+$",
            description="the id to store it under (Optuna's upload_artifact chooses one)",
        ),
    ] = None,
) -> ArtifactInfo:
    """Store a file with the lease's trial (only while the lease is its trial's live one).
    ``kind=checkpoint`` with ``step``: committed once whole and hash-checked, it becomes
    the trial's latest checkpoint."""
    await run_in_threadpool(transfer.check_lease, ctx, lease_id)
    received = await transfer.receive(request.stream(), ctx.settings.max_artifact_bytes)
    try:
        upload = transfer.Upload(kind, filename, step, sha256, artifact_id)
        return await run_in_threadpool(transfer.commit_upload, ctx, lease_id, received, upload)
    finally:
        received.path.unlink(missing_ok=True)


@router.post(
    "/leases/{lease_id}/resume", response_model=ResumeAnswer, responses=error_responses(404, 409)
)
def reject_checkpoint(
    lease_id: str, body: CheckpointRejected, ctx: ContextDep, _: WorkerDep
) -> ResumeAnswer:
    """The worker could not use the checkpoint it was given: it is marked bad and the one
    before it (or none: start afresh) is the answer."""
    resume = transfer.reject_checkpoint(ctx, lease_id, body.artifact_id, body.reason)
    return ResumeAnswer(resume=resume)


@router.get(
    "/trials/{trial_id}/artifacts",
    response_model=list[ArtifactInfo],
    responses=error_responses(404),
)
def list_artifacts(
    trial_id: Annotated[int, Path(ge=0, le=2**31 - 1)], ctx: ContextDep, _: ViewerDep
) -> list[ArtifactInfo]:
    """A trial's artifacts (``trial_id``: the Optuna trial id), Optuna-uploaded ones included."""
    return records.trial_artifacts(ctx, trial_id)


@router.get(
    "/artifacts/{artifact_id}",
    response_class=StreamingResponse,
    responses={**error_responses(404), 200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(artifact_id: ArtifactId, ctx: ContextDep, _: ViewerDep) -> StreamingResponse:
    """The file, streamed; ``X-HPO-SHA256`` and ``Content-Length`` when known."""
    found = transfer.find(ctx, artifact_id)
    reader = transfer.open_reader(ctx, artifact_id)
    stem, dot, extension = found.filename.rpartition(".")
    disposition = content_disposition(stem, extension) if dot and stem else None
    headers = {"content-disposition": disposition or content_disposition(found.filename, "bin")}
    if found.size is not None:
        headers["content-length"] = str(found.size)
    if found.sha256 is not None:
        headers[SHA256_HEADER] = found.sha256
    return StreamingResponse(transfer.chunks(reader), media_type=found.mimetype, headers=headers)


@router.delete("/artifacts/{artifact_id}", status_code=204, responses=error_responses(404))
def delete_artifact(artifact_id: ArtifactId, ctx: ContextDep, _: AdminDep) -> None:
    """Delete an artifact: its file, Optuna's metadata and the service's row."""
    retention.delete(ctx, artifact_id)


@router.get(
    "/studies/{study}/artifacts", response_model=StudyArtifacts, responses=error_responses(404)
)
def study_artifacts(study: StudyRef, ctx: ContextDep, _: ViewerDep) -> StudyArtifacts:
    """Bytes held by the study's artifacts (checkpoints, models, files)."""
    with ctx.db.session() as session:
        record = get_study_record(session, study)
        return StudyArtifacts(
            study=record.name, bytes=retention.bytes_held(session, record.study_id)
        )


@router.post("/studies/{study}/gc", response_model=GcAnswer, responses=error_responses(404))
def collect(study: StudyRef, ctx: ContextDep, _: AdminDep) -> GcAnswer:
    """Apply the study's retention now (the reaper also does, every few seconds)."""
    with ctx.db.session() as session:
        record = get_study_record(session, study)
    report = retention.collect(ctx, record)
    return GcAnswer(study=record.name, **vars(report))
