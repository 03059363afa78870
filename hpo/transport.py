"""HTTP under the typed client: bearer auth, one retry loop, typed errors.

:class:`Transport` wraps :mod:`httpx`:

* connection errors, timeouts and answers 502/503/504 (and 429) are retried with
  exponential backoff and full jitter (``uniform(0, min(cap, base * 2**n))``),
  honouring ``Retry-After``;
* every other 4xx/5xx answer raises an :class:`ApiError` carrying the server's
  ``detail`` at once; a 409 (or 404/410 on a lease endpoint) raises
  :class:`LeaseGone`, which tells a worker to drop the trial.

How long a call keeps trying is its :class:`RetryPolicy` (see
:class:`RetryPolicies`): heartbeats give up after a few attempts (the next one
comes soon), ``complete`` and ``fail`` retry until delivered or a long deadline
(the server makes them idempotent per lease, and a finished trial must never be
lost), the command line gives up after a few seconds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

from hpo.protocol import API_PREFIX

log = logging.getLogger("hpo.client")

#: Answers that mean "the server (or a proxy in front of it) is briefly unavailable".
RETRY_STATUS = frozenset({429, 502, 503, 504})


# --------------------------------------------------------------------------- errors


class ClientError(Exception):
    """Base class of every error the client raises."""


class ServerUnavailable(ClientError):
    """The server could not be reached (or kept answering 5xx) within the retry budget."""

    def __init__(self, message: str, server: str = "") -> None:
        super().__init__(message)
        self.server = server


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
    """401/403: the token is missing, unknown or lacks the role."""


class LeaseGone(ApiError):
    """409, 404 or 410 on a lease endpoint: the lease expired or was re-leased."""


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
        # The exponent is bounded: a worker idle for days counts thousands of attempts.
        delay = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 40)))
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
    # artifacts (checkpoints block training): a few tries within two minutes
    upload: RetryPolicy = field(default_factory=lambda: RetryPolicy(5, 120.0, 0.5, 10.0))

    @classmethod
    def interactive(cls) -> RetryPolicies:
        """For people at a terminal: give up within a few seconds."""
        quick = RetryPolicy(3, 5.0, 0.25, 1.0)
        return cls(**{kind.name: quick for kind in fields(cls)})


# --------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class Call:
    """One API call: method, path under ``/api/v1``, body, query and how to retry it."""

    method: str
    path: str
    policy: RetryPolicy
    json: Any = None
    params: dict[str, Any] | None = None
    lease: bool = False  # 404/410 mean "lease gone" here
    interruptible: bool = False  # the stop event cuts the backoff short
    startup: bool = False  # "waiting for server" log lines instead of warnings
    extra_timeout: float = 0.0  # long-poll: the server may hold the answer this long
    upload: Path | None = None  # a file sent as the raw body, re-read for every attempt
    headers: dict[str, str] | None = None


class Transport:
    """httpx client + the retry loop (one per thread: httpx clients are not shared here).

    ``stop`` (optional) interrupts the waits of interruptible calls, so a shutting-down
    worker does not sit in a backoff. ``sleep`` replaces the waits (tests);
    ``transport`` is passed to :class:`httpx.Client` (tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "hpo-client",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
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

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying per its policy; the successful response."""
        url = API_PREFIX + call.path
        timeout = httpx.Timeout(self.timeout + call.extra_timeout, connect=min(self.timeout, 5.0))
        start, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            outcome = self._attempt(call, url, timeout)
            if isinstance(outcome, httpx.Response):
                return outcome
            delay = call.policy.delay(attempt, time.monotonic() - start, self._rng)
            if delay is None:
                raise ServerUnavailable(
                    f"{call.method} {url} to {self.base_url}: giving up after {attempt} "
                    f"attempts ({time.monotonic() - start:.1f}s): {outcome.problem}",
                    self.base_url,
                )
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, call.policy.cap_s))
            self._log_retry(call, url, outcome.problem, attempt, delay)
            self._wait(delay, call.interruptible)

    @contextmanager
    def stream(self, path: str, params: dict[str, Any]) -> Iterator[httpx.Response]:
        """A streamed GET (exports); errors raise like :meth:`request` (no retries)."""
        url = API_PREFIX + path
        try:
            with self._http.stream("GET", url, params=params) as resp:
                if resp.is_error:
                    resp.read()
                    raise _api_error(resp, "GET", url, lease=False)
                yield resp
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"GET {url} to {self.base_url}: {exc}", self.base_url) from exc

    def _attempt(self, call: Call, url: str, timeout: httpx.Timeout) -> httpx.Response | _Retry:
        """One request: the response, or a :class:`_Retry` saying why to try again."""
        try:
            if call.upload is not None:
                resp = self._send_file(call, url, timeout)
            else:
                resp = self._http.request(
                    call.method, url, json=call.json, params=call.params, timeout=timeout
                )
        except httpx.UnsupportedProtocol:
            raise
        except httpx.TransportError as exc:
            return _Retry(f"{type(exc).__name__}: {exc}")
        if resp.status_code in RETRY_STATUS:
            return _Retry(f"HTTP {resp.status_code}", _retry_after(resp))
        if resp.is_error:
            raise _api_error(resp, call.method, url, call.lease)
        return resp

    def _send_file(self, call: Call, url: str, timeout: httpx.Timeout) -> httpx.Response:
        """The file as the body, streamed from disk (bounded memory whatever its size)."""
        assert call.upload is not None
        size = call.upload.stat().st_size
        headers = {
            **(call.headers or {}),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        with call.upload.open("rb") as body:
            return self._http.request(
                call.method,
                url,
                content=_chunks(body),
                params=call.params,
                headers=headers,
                timeout=timeout,
            )

    def _log_retry(self, call: Call, url: str, problem: str, attempt: int, delay: float) -> None:
        if call.startup:
            if attempt == 1:
                log.info("waiting for server at %s ... (%s)", self.base_url, problem)
            else:
                log.debug("still waiting for server at %s (%s)", self.base_url, problem)
            return
        log.warning(
            "%s %s failed (%s); retry %d in %.1fs", call.method, url, problem, attempt, delay
        )

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


def _chunks(body: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := body.read(size):
        yield chunk


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


def error_detail(resp: httpx.Response) -> str:
    """The server's error message: ``detail`` (validation lists joined), else the body."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        if isinstance(detail, list):
            return "; ".join(
                str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail
            )
        return detail if isinstance(detail, str) else str(detail)[:1000]
    return str(data)[:500]


def _api_error(resp: httpx.Response, method: str, url: str, lease: bool) -> ApiError:
    status = resp.status_code
    detail = error_detail(resp)
    if status in (401, 403):
        return AuthError(status, detail, method, url)
    if lease and status in (404, 409, 410):
        return LeaseGone(status, detail, method, url)
    return ApiError(status, detail, method, url)
