"""REST client the worker daemon uses to speak the trial protocol.

:class:`ServiceClient` wraps :mod:`httpx` with bearer auth and one retry loop:

* connection errors, timeouts and answers 502/503/504 (and 429) are retried with
  exponential backoff and full jitter (``uniform(0, min(cap, base * 2**n))``);
* every other 4xx/5xx answer raises an :class:`ApiError` carrying the server's
  ``detail`` at once; a 409 (or 404/410 on a lease endpoint) raises
  :class:`LeaseGone`, which tells the daemon to drop the trial.

How long a call keeps trying depends on what it is (see :class:`RetryPolicies`):
heartbeats give up after a few attempts (the next heartbeat comes soon), while
``complete`` and ``fail`` retry until delivered or until a long total deadline,
because the server makes them idempotent per lease and a finished trial must
never be lost. Only the wire models of :mod:`workers.protocol` go over the wire.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from workers.protocol import (
    API_PREFIX,
    ActionResponse,
    CompleteRequest,
    FailRequest,
    FinishResponse,
    HeartbeatRequest,
    LeaseRequest,
    LeaseResponse,
    ReportRequest,
    WorkerInfo,
    WorkerRegistration,
)

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

#: Answers that mean "the server (or a proxy in front of it) is briefly unavailable".
RETRY_STATUS = frozenset({429, 502, 503, 504})


# --------------------------------------------------------------------------- errors


class ClientError(Exception):
    """Base class of every error the client raises."""


class ServerUnavailable(ClientError):
    """The server could not be reached (or kept answering 5xx) within the retry budget."""


class ClientAborted(ClientError):
    """The client's stop event was set while it waited to retry."""


class ApiError(ClientError):
    """The server answered with an error that retrying cannot fix (4xx, 500)."""

    def __init__(self, status_code: int, detail: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.path = path


class AuthError(ApiError):
    """401/403: the token is missing, unknown or lacks the worker role."""


class LeaseGone(ApiError):
    """409 (or 404/410 on a lease endpoint): the lease expired or was re-leased."""


# --------------------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one kind of call is retried.

    ``max_attempts`` bounds the number of requests (None = unbounded) and
    ``max_total_s`` the time since the first request (None = unbounded); the
    call gives up when either is reached. Delays grow as ``base_s * 2**n``,
    capped at ``cap_s``, with full jitter.
    """

    max_attempts: int | None = 5
    max_total_s: float | None = None
    base_s: float = 0.5
    cap_s: float = 10.0

    def delay(self, attempt: int, elapsed: float, rng: random.Random) -> float | None:
        """Seconds to wait before request ``attempt + 1``, or None to give up."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        delay = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        if self.max_total_s is not None:
            remaining = self.max_total_s - elapsed
            if remaining <= 0:
                return None
            delay = min(delay, remaining)
        return delay


@dataclass(frozen=True)
class RetryPolicies:
    """The retry policy of each kind of call."""

    default: RetryPolicy = field(default_factory=RetryPolicy)
    heartbeat: RetryPolicy = field(default_factory=lambda: RetryPolicy(3, None, 0.5, 5.0))
    # A report blocks training: try briefly, then train on (the pruner misses one value).
    report: RetryPolicy = field(default_factory=lambda: RetryPolicy(3, None, 0.25, 2.0))
    # complete/fail: up to an hour; capped at 10 s so a result lands soon after a restart.
    finish: RetryPolicy = field(default_factory=lambda: RetryPolicy(None, 3600.0, 0.5, 10.0))
    startup: RetryPolicy = field(default_factory=lambda: RetryPolicy(None, None, 0.5, 5.0))


# --------------------------------------------------------------------------- client


class ServiceClient:
    """Typed, retrying client of the trial protocol (one per thread).

    ``stop`` (optional) interrupts the waits of register and lease retries, so a
    shutting-down daemon does not sit in a backoff; complete and fail ignore it.
    ``sleep`` replaces the waits entirely (tests). ``transport`` is passed to
    :class:`httpx.Client` (tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        policies: RetryPolicies | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "hpo-worker",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.policies = policies or RetryPolicies()
        self._stop = stop or threading.Event()
        self._sleep = sleep
        self._rng = rng or random.Random()
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol

    def register(
        self,
        registration: WorkerRegistration,
        *,
        wait: bool = False,
        deadline_s: float | None = None,
    ) -> WorkerInfo:
        """Register this worker process.

        With ``wait=True`` an unreachable server is waited for (one log line
        "waiting for server at URL ..."), at most ``deadline_s`` seconds if given.
        """
        if not wait:
            return self._call("/workers/register", registration, WorkerInfo, self.policies.default)
        startup = self.policies.startup
        policy = RetryPolicy(None, deadline_s, startup.base_s, startup.cap_s)
        return self._call(
            "/workers/register", registration, WorkerInfo, policy, interruptible=True, startup=True
        )

    def lease(self, request: LeaseRequest) -> LeaseResponse:
        """Ask for a trial; long-polls up to ``request.wait_s`` seconds on the server."""
        return self._call(
            "/trials/lease",
            request,
            LeaseResponse,
            self.policies.default,
            interruptible=True,
            extra_timeout=request.wait_s,
        )

    def heartbeat(self, lease_id: str, request: HeartbeatRequest | None = None) -> ActionResponse:
        """Extend a lease (few attempts: the next heartbeat follows soon)."""
        path = f"/leases/{quote(lease_id, safe='')}/heartbeat"
        body = request or HeartbeatRequest()
        return self._call(path, body, ActionResponse, self.policies.heartbeat, lease=True)

    def report(self, lease_id: str, request: ReportRequest) -> ActionResponse:
        """Send one per-epoch objective value and metrics."""
        path = f"/leases/{quote(lease_id, safe='')}/report"
        return self._call(path, request, ActionResponse, self.policies.report, lease=True)

    def complete(self, lease_id: str, request: CompleteRequest) -> FinishResponse:
        """Finish a trial; retried until delivered (idempotent on the server)."""
        path = f"/leases/{quote(lease_id, safe='')}/complete"
        return self._call(path, request, FinishResponse, self.policies.finish, lease=True)

    def fail(self, lease_id: str, request: FailRequest) -> FinishResponse:
        """Fail or abandon a trial; retried until delivered (idempotent on the server)."""
        path = f"/leases/{quote(lease_id, safe='')}/fail"
        return self._call(path, request, FinishResponse, self.policies.finish, lease=True)

    # ------------------------------------------------------------------ machinery

    def _call(
        self,
        path: str,
        body: BaseModel,
        answer: type[T],
        policy: RetryPolicy,
        *,
        lease: bool = False,
        interruptible: bool = False,
        startup: bool = False,
        extra_timeout: float = 0.0,
    ) -> T:
        """POST ``body`` to ``path`` under the API prefix, retrying per ``policy``."""
        url = API_PREFIX + path
        payload = body.model_dump(mode="json", exclude_none=False)
        timeout = httpx.Timeout(self.timeout + extra_timeout, connect=min(self.timeout, 5.0))
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            outcome = self._attempt(url, payload, timeout, answer, lease)
            if not isinstance(outcome, _Retry):
                return outcome
            delay = policy.delay(attempt, time.monotonic() - start, self._rng)
            if delay is None:
                raise ServerUnavailable(
                    f"POST {url} to {self.base_url}: giving up after {attempt} attempts "
                    f"({time.monotonic() - start:.1f}s): {outcome.problem}"
                )
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, policy.cap_s))
            self._log_retry(url, outcome.problem, attempt, delay, startup)
            self._wait(delay, interruptible)

    def _attempt(
        self,
        url: str,
        payload: dict[str, Any],
        timeout: httpx.Timeout,
        answer: type[T],
        lease: bool,
    ) -> T | _Retry:
        """One request: the parsed answer, or a :class:`_Retry` saying why to try again."""
        try:
            resp = self._http.post(url, json=payload, timeout=timeout)
        except httpx.UnsupportedProtocol:
            raise
        except httpx.TransportError as exc:
            return _Retry(f"{type(exc).__name__}: {exc}")
        if resp.status_code in RETRY_STATUS:
            return _Retry(f"HTTP {resp.status_code}", _retry_after(resp))
        if resp.is_error:
            raise _api_error(resp, "POST", url, lease)
        return answer.model_validate(resp.json())

    def _log_retry(self, url: str, problem: str, attempt: int, delay: float, startup: bool) -> None:
        if startup:
            if attempt == 1:
                log.info("waiting for server at %s ... (%s)", self.base_url, problem)
            else:
                log.debug("still waiting for server at %s (%s)", self.base_url, problem)
            return
        log.warning("POST %s failed (%s); retry %d in %.1fs", url, problem, attempt, delay)

    def _wait(self, delay: float, interruptible: bool) -> None:
        if self._sleep is not None:
            self._sleep(delay)
            if interruptible and self._stop.is_set():
                raise ClientAborted("stop requested while waiting to retry")
        elif interruptible:
            if self._stop.wait(delay):
                raise ClientAborted("stop requested while waiting to retry")
        else:
            time.sleep(delay)


@dataclass(frozen=True)
class _Retry:
    """A request that may succeed when tried again."""

    problem: str
    retry_after: float | None = None


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        return detail if isinstance(detail, str) else str(detail)[:1000]
    return str(data)[:500]


def _api_error(resp: httpx.Response, method: str, url: str, lease: bool) -> ApiError:
    status = resp.status_code
    detail = _detail(resp)
    if status in (401, 403):
        return AuthError(status, detail, method, url)
    if status == 409 or (lease and status in (404, 410)):
        return LeaseGone(status, detail, method, url)
    return ApiError(status, detail, method, url)
