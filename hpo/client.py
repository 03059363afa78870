"""``hpo.Client``: the typed REST client of hpo-service.

One client for everything a user, the ``hpo study`` command line and the worker
daemon do over HTTP, with one retry policy (:mod:`hpo.transport`)::

    import hpo

    client = hpo.Client("http://hpo.internal:8000", token)
    study = client.create_study("studies/quick.yaml")
    client.wait(study.name)
    print(client.get_study(study.name).best_trial)

Answers are the pydantic models of :mod:`hpo.schemas` and :mod:`hpo.protocol`.
The trial protocol methods (register, lease, heartbeat, report, complete,
fail) are what a worker speaks; see :mod:`hpo.protocol`.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from hpo.optuna_view import StudyTrialsBody, StudyViewBody, TrialAttrsRequest
from hpo.protocol import (
    SHA256_HEADER,
    ActionResponse,
    ArtifactInfo,
    ArtifactKind,
    Checkpoint,
    CheckpointRejected,
    CompleteRequest,
    FailRequest,
    FinishResponse,
    HeartbeatRequest,
    LeaseRequest,
    LeaseResponse,
    ReportRequest,
    ResumeAnswer,
    SuggestRequest,
    SuggestResponse,
    WorkerInfo,
    WorkerRegistration,
)
from hpo.schemas import (
    BestTrial,
    ParetoFront,
    ShownState,
    StudyDiagnosis,
    StudyPage,
    StudyState,
    StudySummary,
    TrialDetail,
    TrialItem,
    TrialPage,
)
from hpo.spec import StudySpec
from hpo.transport import Call, RetryPolicies, RetryPolicy, Transport

if TYPE_CHECKING:
    from hpo.optuna_study import ClientStudy

T = TypeVar("T", bound=BaseModel)

DEFAULT_SERVER = "http://127.0.0.1:8000"
#: Trial states in which a study still has work going on.
_UNFINISHED = (ShownState.RUNNING, ShownState.WAITING, ShownState.QUEUED)


class Client:
    """Typed client of one server. ``url`` and ``token`` default to ``$HPO_SERVER`` and
    ``$HPO_TOKEN``. Not shared across threads: make one per thread."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        policies: RetryPolicies | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "hpo-client",
    ) -> None:
        self.base_url = (url or os.environ.get("HPO_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.policies = policies or RetryPolicies()
        self._token = token if token is not None else os.environ.get("HPO_TOKEN")
        self._timeout = timeout
        self._http = Transport(
            self.base_url,
            self._token,
            timeout,
            stop=stop,
            sleep=sleep,
            rng=rng,
            transport=transport,
            user_agent=user_agent,
        )

    def clone(self) -> Client:
        """A new client on the same server, token, timeout and retry policies (a Client
        serves one thread: a heartbeat thread gets its own)."""
        return Client(self.base_url, self._token, self._timeout, policies=self.policies)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ studies

    def create_study(self, spec: StudySpec | dict[str, Any] | str | Path) -> StudySummary:
        """Create a study from a spec object, a dict, or the path of a YAML file."""
        body = _spec_body(spec)
        return self._typed(Call("POST", "/studies", self.policies.default, json=body), StudySummary)

    def get_study(self, study: str | int) -> StudySummary:
        """A study's spec, state, trial counts and best trial (or Pareto front)."""
        return self._typed(Call("GET", study_path(study), self.policies.default), StudySummary)

    def list_studies(self, limit: int = 50, offset: int = 0) -> StudyPage:
        """One page of studies in creation order."""
        params = {"limit": limit, "offset": offset}
        return self._typed(Call("GET", "/studies", self.policies.default, params=params), StudyPage)

    def pause(self, study: str | int) -> StudySummary:
        """Hand out no new trials until resumed."""
        return self._state(study, "pause")

    def resume(self, study: str | int) -> StudySummary:
        """Hand out trials again."""
        return self._state(study, "resume")

    def stop(self, study: str | int) -> StudySummary:
        """Stop for good; workers are told to drop the study's trials."""
        return self._state(study, "stop")

    def delete_study(self, study: str | int, force: bool = False) -> None:
        """Delete the study and all its trials (409 while leases are active, unless ``force``)."""
        params = {"force": str(force).lower()}
        self._http.request(Call("DELETE", study_path(study), self.policies.default, params=params))

    def _state(self, study: str | int, action: str) -> StudySummary:
        call = Call("POST", study_path(study, f"/{action}"), self.policies.default)
        return self._typed(call, StudySummary)

    def study(self, name: str) -> ClientStudy:
        """The study with Optuna's ``Study`` API: ask/tell, optimize, trials, best_trial
        (see :mod:`hpo.optuna_study`; needs Optuna). Close it (or use ``with``) to give
        back the trials asked and not told."""
        from hpo.optuna_study import ClientStudy  # imports Optuna: only when asked for

        return ClientStudy(self, name)

    # ------------------------------------------------------------------ trials

    def trials_page(
        self,
        study: str | int,
        *,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
        order: str = "number",
    ) -> TrialPage:
        """One page of a study's trials (``order``: number or value, ``-`` descends)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, "order": order}
        if state is not None:
            params["state"] = state
        call = Call("GET", study_path(study, "/trials"), self.policies.default, params=params)
        return self._typed(call, TrialPage)

    def trials(self, study: str | int, *, state: str | None = None) -> Iterator[TrialItem]:
        """Every trial of the study, by number (fetched a page at a time)."""
        offset = 0
        while True:
            page = self.trials_page(study, state=state, limit=500, offset=offset)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def trial(self, study: str | int, number: int) -> TrialDetail:
        """One trial with its learning curve, metrics and lease history."""
        call = Call("GET", study_path(study, f"/trials/{int(number)}"), self.policies.default)
        return self._typed(call, TrialDetail)

    def best_trials(self, study: str | int) -> list[BestTrial]:
        """The best trial (single objective) or the Pareto front (several objectives)."""
        summary = self.get_study(study)
        if summary.best_trials is not None:
            return summary.best_trials
        return [summary.best_trial] if summary.best_trial else []

    def diagnosis(self, study: str | int) -> StudyDiagnosis:
        """Findings across the study's trials and the spec edits proposed to avoid them."""
        call = Call("GET", study_path(study, "/diagnosis"), self.policies.default)
        return self._typed(call, StudyDiagnosis)

    def pareto(self, study: str | int) -> ParetoFront:
        """The study's Pareto front (its best trial when it has one objective)."""
        return self._typed(
            Call("GET", study_path(study, "/pareto"), self.policies.default), ParetoFront
        )

    def export(self, study: str | int, write: Callable[[bytes], Any], fmt: str = "csv") -> int:
        """Stream the study's export (``csv`` or ``json``) into ``write``; bytes written."""
        size = 0
        with self._http.stream(study_path(study, "/export"), {"format": fmt}) as resp:
            for chunk in resp.iter_bytes():
                write(chunk)
                size += len(chunk)
        return size

    def to_dataframe(self, study: str | int) -> Any:
        """The study's trials as a pandas DataFrame (needs pandas): one row per trial,
        ``params_<name>`` columns like Optuna's ``study.trials_dataframe()``."""
        import pandas as pd  # optional: only this method needs it

        rows = []
        for t in self.trials(study):
            row = t.model_dump(exclude={"params"})
            row.update({f"params_{k}": v for k, v in t.params.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def wait(
        self,
        study: str | int,
        *,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
        progress: bool = True,
    ) -> StudySummary:
        """Block until the study's budget is spent (or it was stopped) and nothing runs.

        With ``progress`` a rich progress bar shows finished / max_trials.
        Raises TimeoutError after ``timeout_s``.
        """
        from hpo.progress import study_progress  # rich: imported only when waiting

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with study_progress(progress) as bar:
            while True:
                summary = self.get_study(study)
                bar.update(summary)
                if _finished(summary):
                    return summary
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"study {summary.name!r} still running after {timeout_s}s")
                time.sleep(poll_s)

    # ------------------------------------------------------------------ trial protocol

    def register(
        self,
        registration: WorkerRegistration,
        *,
        wait: bool = False,
        deadline_s: float | None = None,
    ) -> WorkerInfo:
        """Register a worker; with ``wait`` an unreachable server is waited for
        (at most ``deadline_s`` seconds when given)."""
        body = registration.model_dump(mode="json")
        if not wait:
            call = Call("POST", "/workers/register", self.policies.default, json=body)
        else:
            s = self.policies.startup
            policy = RetryPolicy(None, deadline_s, s.base_s, s.cap_s)
            call = Call(
                "POST", "/workers/register", policy, json=body, interruptible=True, startup=True
            )
        return self._typed(call, WorkerInfo)

    def lease(self, request: LeaseRequest) -> LeaseResponse:
        """Ask for work; long-polls up to ``request.wait_s`` seconds on the server.

        Without a ``request_id`` the request gets a fresh one; the transport's retries
        send the same body, so a retry gets the trials of the first attempt."""
        if request.request_id is None:
            request = request.model_copy(update={"request_id": uuid.uuid4().hex})
        call = Call(
            "POST",
            "/trials/lease",
            self.policies.default,
            json=request.model_dump(mode="json"),
            interruptible=True,
            extra_timeout=request.wait_s,
        )
        return self._typed(call, LeaseResponse)

    def heartbeat(self, lease_id: str, request: HeartbeatRequest | None = None) -> ActionResponse:
        """Extend a lease (few attempts: the next heartbeat follows soon)."""
        body = request or HeartbeatRequest()
        return self._lease_call(
            lease_id, "heartbeat", body, ActionResponse, self.policies.heartbeat
        )

    def report(self, lease_id: str, request: ReportRequest) -> ActionResponse:
        """One per-step objective value and metrics; the answer says continue/prune/stop."""
        return self._lease_call(lease_id, "report", request, ActionResponse, self.policies.report)

    def suggest(self, lease_id: str, request: SuggestRequest) -> SuggestResponse:
        """Define-by-run: one parameter sampled by the study's sampler (retried: idempotent)."""
        return self._lease_call(
            lease_id, "suggest", request, SuggestResponse, self.policies.default
        )

    def lease_study(self, lease_id: str) -> StudyViewBody:
        """The lease's study as Optuna's ``Study`` reads it (``trial.study``)."""
        path = f"/leases/{quote(lease_id, safe='')}/study"
        return self._typed(Call("GET", path, self.policies.default, lease=True), StudyViewBody)

    def lease_study_trials(self, lease_id: str, states: list[str] | None = None) -> StudyTrialsBody:
        """The lease's study's trials (Optuna state names filter them)."""
        path = f"/leases/{quote(lease_id, safe='')}/study/trials"
        params = {"states": states} if states else None
        call = Call("GET", path, self.policies.default, params=params, lease=True)
        return self._typed(call, StudyTrialsBody)

    def set_trial_attrs(self, lease_id: str, request: TrialAttrsRequest) -> None:
        """Write the lease's trial's attributes now (``trial.set_constraint``)."""
        path = f"/leases/{quote(lease_id, safe='')}/attrs"
        body = request.model_dump(mode="json")
        self._http.request(Call("POST", path, self.policies.report, json=body, lease=True))

    def complete(self, lease_id: str, request: CompleteRequest) -> FinishResponse:
        """Finish a trial; retried until delivered (idempotent on the server)."""
        return self._lease_call(lease_id, "complete", request, FinishResponse, self.policies.finish)

    def fail(self, lease_id: str, request: FailRequest) -> FinishResponse:
        """Fail or abandon a trial; retried until delivered (idempotent on the server)."""
        return self._lease_call(lease_id, "fail", request, FinishResponse, self.policies.finish)

    # ------------------------------------------------------------------ artifacts

    def upload_artifact(
        self,
        lease_id: str,
        path: str | Path,
        kind: ArtifactKind = ArtifactKind.FILE,
        step: int | None = None,
        filename: str | None = None,
        artifact_id: str | None = None,
    ) -> ArtifactInfo:
        """Store a file with the lease's trial, streamed from disk and hash-checked
        (under ``artifact_id`` when given: a retry of a stored upload is answered alike)."""
        path = Path(path)
        params: dict[str, Any] = {"kind": str(kind), "filename": filename or path.name}
        if step is not None:
            params["step"] = step
        if artifact_id is not None:
            params["artifact_id"] = artifact_id
        call = Call(
            "PUT",
            f"/leases/{quote(lease_id, safe='')}/artifacts",
            self.policies.upload,
            params=params,
            lease=True,
            upload=path,
            headers={SHA256_HEADER: file_sha256(path)},
        )
        return self._typed(call, ArtifactInfo)

    def reject_checkpoint(self, lease_id: str, artifact_id: str, reason: str) -> Checkpoint | None:
        """Say a checkpoint could not be used; the one to try next (None: start afresh)."""
        body = CheckpointRejected(artifact_id=artifact_id, reason=reason[:2000])
        return self._lease_call(lease_id, "resume", body, ResumeAnswer, self.policies.report).resume

    def artifacts(self, trial_id: int) -> list[ArtifactInfo]:
        """A trial's artifacts (``trial_id``: the Optuna trial id, ``TrialDetail.trial_id``)."""
        call = Call("GET", f"/trials/{int(trial_id)}/artifacts", self.policies.default)
        return [ArtifactInfo.model_validate(a) for a in self._http.request(call).json()]

    def download_artifact(self, artifact_id: str, dest: str | Path) -> Path:
        """Stream an artifact to ``dest`` (a file, or a folder: its own name inside), checking
        its hash when the server knows it; the file written (replaced only when whole)."""
        dest = Path(dest)
        path = f"/artifacts/{quote(artifact_id, safe='')}"
        with self._http.stream(path, {}) as resp:
            if dest.is_dir():
                dest = dest / _attachment_name(resp.headers, artifact_id)
            partial = dest.with_name(dest.name + ".part")
            digest = hashlib.sha256()
            with partial.open("wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            expected = resp.headers.get(SHA256_HEADER)
        if expected and expected.lower() != digest.hexdigest():
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"artifact {artifact_id}: sha256 {digest.hexdigest()} != {expected}"
            )
        partial.replace(dest)
        return dest

    def delete_artifact(self, artifact_id: str) -> None:
        """Delete an artifact (admin)."""
        path = f"/artifacts/{quote(artifact_id, safe='')}"
        self._http.request(Call("DELETE", path, self.policies.default))

    def study_artifacts(self, study: str | int) -> dict[str, int]:
        """Bytes held by a study's artifacts, per kind (and ``total``, ``count``)."""
        call = Call("GET", study_path(study, "/artifacts"), self.policies.default)
        return dict(self._http.request(call).json()["bytes"])

    def gc(self, study: str | int) -> dict[str, Any]:
        """Apply the study's retention now (admin): what was deleted and freed."""
        call = Call("POST", study_path(study, "/gc"), self.policies.default)
        return dict(self._http.request(call).json())

    def best_models(self, study: str | int, dest: str | Path) -> list[Path]:
        """Download the model of the best trial (every Pareto trial for several objectives)
        into ``dest/trial-<number>/``; the files written."""
        written = []
        for best in self.best_trials(study):
            models = [a for a in self.artifacts(best.trial_id) if a.kind == ArtifactKind.MODEL]
            if not models:  # no empty trial-<number>/ folder for a trial without a model
                continue
            folder = Path(dest) / f"trial-{best.number}"
            folder.mkdir(parents=True, exist_ok=True)
            written += [
                self.download_artifact(
                    a.artifact_id, folder / _file_name(a.filename, a.artifact_id)
                )
                for a in models
            ]
        return written

    # ------------------------------------------------------------------ machinery

    def _lease_call(
        self, lease_id: str, verb: str, body: BaseModel, answer: type[T], policy: RetryPolicy
    ) -> T:
        path = f"/leases/{quote(lease_id, safe='')}/{verb}"
        call = Call("POST", path, policy, json=body.model_dump(mode="json"), lease=True)
        return self._typed(call, answer)

    def _typed(self, call: Call, answer: type[T]) -> T:
        return answer.model_validate(self._http.request(call).json())


def study_path(ref: str | int, suffix: str = "") -> str:
    """The API path of a study (by name or id), with ``suffix``."""
    return f"/studies/{quote(str(ref), safe='')}{suffix}"


def _spec_body(spec: StudySpec | dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(spec, StudySpec):
        return spec.model_dump(mode="json", exclude_unset=True)
    if isinstance(spec, str | Path):
        from hpo.specfile import load_spec_file

        return load_spec_file(Path(spec))
    return dict(spec)


def _finished(summary: StudySummary) -> bool:
    counts = summary.counts
    busy = sum(getattr(counts, name) for name in _UNFINISHED)
    if busy:
        return False
    return summary.state == StudyState.STOPPED or counts.total >= summary.max_trials


class ChecksumMismatch(RuntimeError):
    """A downloaded artifact's bytes do not match the hash the server stored."""


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _file_name(name: str, default: str) -> str:
    """``name`` as a plain file name inside the destination folder (never ``..``)."""
    name = Path(name).name
    return default if name in ("", ".", "..") else name


def _attachment_name(headers: Any, default: str) -> str:
    """The file name of a Content-Disposition header (``filename*`` first), made safe."""
    from email.message import Message

    msg = Message()
    msg["content-disposition"] = headers.get("content-disposition", "")
    name = msg.get_filename() or default
    return Path(name).name or default
