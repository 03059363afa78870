"""A trial's checkpoint folder: committed at a report, restored before a re-run.

The worker gives every attempt a local folder (``trial.checkpoint_dir``). What is
in it when ``trial.report(value, step)`` returns is committed as the checkpoint of
that step: the folder is packed into one tar file at once and uploaded through
the lease in the background while training goes on (one upload at a time;
the attempt's final call waits for it), hash-checked, and becomes the trial's
latest checkpoint only once it arrived whole (a folder unchanged since the last
commit is not sent again). On a re-run
the folder is filled with the latest checkpoint before the objective starts;
one that cannot be downloaded or unpacked is reported and the one before it is
tried, down to a fresh start, each with a warning on the trial.

Torch-free: own objectives and command children use it too.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

from hpo.protocol import ArtifactKind, Checkpoint
from hpo.transport import ApiError, ClientError

log = logging.getLogger("hpo.checkpoints")

ARCHIVE = "checkpoint.tar"
#: At most this many checkpoints are tried before a re-run starts afresh.
MAX_FALLBACKS = 5


class CheckpointFolder:
    """The checkpoint folder of one attempt, and its commits through the lease."""

    def __init__(self, client: Any, lease_id: str, folder: Path, label: str = "") -> None:
        self.client, self.lease_id, self.folder, self.label = client, lease_id, folder, label
        self.folder.mkdir(parents=True, exist_ok=True)
        self.warnings: list[str] = []
        self.resume: Checkpoint | None = None
        self._committed = self._packed = fingerprint(self.folder)
        self.commits = 0
        self._upload: threading.Thread | None = None

    # ------------------------------------------------------------------ commit

    def commit(self, step: int, wait: bool = True) -> bool:
        """Pack the folder as the checkpoint of ``step`` when it changed and upload it (in
        the background with ``wait=False``; :meth:`flush` waits); True when one was stored
        (``wait=False``: packed)."""
        now = fingerprint(self.folder)
        if not now or now == self._packed:
            return False
        self.flush()  # one upload at a time, in order
        tmp = Path(tempfile.mkdtemp(prefix="hpo-commit-"))
        archive, self._packed = pack(self.folder, tmp / ARCHIVE), now
        if wait:
            self._send(archive, step, now)
            return self._committed == now
        self._upload = threading.Thread(
            target=self._send, args=(archive, step, now), name="hpo-checkpoint", daemon=True
        )
        self._upload.start()
        return True

    def flush(self) -> bool:
        """Wait for the upload in flight; True when every packed checkpoint was stored."""
        if self._upload is not None:
            self._upload.join()
            self._upload = None
        return self._packed == self._committed

    def _send(self, archive: Path, step: int, packed: tuple[tuple[str, int, int], ...]) -> None:
        try:
            self.client.upload_artifact(
                self.lease_id, archive, ArtifactKind.CHECKPOINT, step, ARCHIVE
            )
        except (ApiError, ClientError) as exc:  # training goes on; the next commit retries
            log.warning("%s: checkpoint of step %d not stored: %s", self.label, step, exc)
            self._packed = self._committed
        else:
            self._committed, self.commits = packed, self.commits + 1
        finally:
            shutil.rmtree(archive.parent, ignore_errors=True)

    # ------------------------------------------------------------------ restore

    def restore(self, resume: Checkpoint | None) -> int | None:
        """Fill the folder from ``resume`` (falling back to older ones); the step it holds,
        or None for a fresh start."""
        for _ in range(MAX_FALLBACKS):
            if resume is None:
                break
            try:
                self._fill(resume)
            except (OSError, tarfile.TarError, ClientError, ApiError, ValueError) as exc:
                resume = self.reject(f"checkpoint {resume.artifact_id} unusable: {exc}")
                continue
            self.resume = resume
            self._committed = fingerprint(self.folder)
            return resume.step
        self.resume = None
        return None

    def reject(self, reason: str) -> Checkpoint | None:
        """Tell the server the current checkpoint is unusable; empty the folder; the next
        one to try (None: start afresh). The reason is kept as a warning on the trial."""
        bad = self.resume
        self.warnings.append(reason)
        log.warning("%s: %s", self.label, reason)
        clear(self.folder)
        self._committed = fingerprint(self.folder)
        self.resume = None
        if bad is None:
            return None
        try:
            resume: Checkpoint | None = self.client.reject_checkpoint(
                self.lease_id, bad.artifact_id, reason
            )
            return resume
        except (ApiError, ClientError) as exc:
            self.warnings.append(f"could not ask for an older checkpoint: {exc}")
            return None

    def _fill(self, resume: Checkpoint) -> None:
        self.resume = resume  # what reject() names if this one fails
        clear(self.folder)
        with tempfile.TemporaryDirectory(prefix="hpo-restore-") as tmp:
            archive = self.client.download_artifact(resume.artifact_id, Path(tmp) / ARCHIVE)
            unpack(archive, self.folder)


def pack(folder: Path, archive: Path) -> Path:
    """``folder``'s files as an uncompressed tar (checkpoints are mostly incompressible)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                tar.add(path, arcname=str(path.relative_to(folder)))
    return archive


def unpack(archive: Path, folder: Path) -> None:
    """Extract a checkpoint archive into ``folder``; no path may leave it."""
    with tarfile.open(archive, "r") as tar:
        tar.extractall(folder, filter="data")


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changed in a folder: each file's name, size and modification time."""
    if not folder.is_dir():
        return ()
    return tuple(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".tmp")
    )


def clear(folder: Path) -> None:
    """Empty ``folder`` (keeping it)."""
    for path in folder.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
