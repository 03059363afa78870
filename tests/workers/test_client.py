"""Client: bearer auth, typed answers, retries with backoff, typed errors.

Most tests talk to a real HTTP server on 127.0.0.1 (``ScriptedServer``: answers
from a per-path script). httpx.MockTransport is used ONLY in the retry-sequencing
unit tests at the bottom, where the exact delays are asserted and no socket is
needed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from hpo.client import Client
from hpo.protocol import (
    Action,
    CompleteRequest,
    FailRequest,
    FinishState,
    HeartbeatRequest,
    LeaseRequest,
    ReportRequest,
    WorkerRegistration,
)
from hpo.transport import (
    ApiError,
    AuthError,
    ClientAborted,
    LeaseGone,
    RetryPolicies,
    RetryPolicy,
    ServerUnavailable,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
FINISHED = {"trial_id": 7, "trial_number": 3, "state": "complete", "value": 0.91}
WORKER = {
    "worker_id": "w-1",
    "hostname": "box",
    "registered_at": NOW,
    "last_seen_at": NOW,
}
FAST = RetryPolicies(
    default=RetryPolicy(5, None, 0.01, 0.05),
    heartbeat=RetryPolicy(3, None, 0.01, 0.05),
    report=RetryPolicy(3, None, 0.01, 0.05),
    finish=RetryPolicy(None, 30.0, 0.01, 0.2),
    startup=RetryPolicy(None, None, 0.05, 0.2),
)


# --------------------------------------------------------------------------- a real server


class ScriptedServer:
    """HTTP server whose answers per path come from a script: (status, body, delay_s)."""

    def __init__(self) -> None:
        self.script: dict[str, deque[tuple[int, Any, float]]] = defaultdict(deque)
        self.default: dict[str, tuple[int, Any, float]] = {}
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.answered: list[tuple[str, int]] = []
        # Bound but not listening until start(): connections are refused meanwhile, and
        # no other process can take the port in between (a free-port probe could race).
        self._httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), self._handler(), bind_and_activate=False
        )
        self._httpd.server_bind()
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedServer:
        self._httpd.server_activate()
        self._thread.start()
        return self

    def answers(self, count: int, timeout: float = 5.0) -> list[tuple[str, int]]:
        """The answers written, once ``count`` are: a handler thread records its answer
        just after writing it, so the client may read it a moment before it is recorded."""
        deadline = time.monotonic() + timeout
        while len(self.answered) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.answered)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, path: str) -> tuple[int, Any, float]:
        queue = self.script[path]
        return queue.popleft() if queue else self.default.get(path, (404, {"detail": "?"}, 0))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                server.requests.append((self.path, dict(self.headers), body))
                status, answer, delay = server._next(self.path)
                time.sleep(delay)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    server.answered.append((self.path, status))
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client timed out and hung up: nobody to answer

            def log_message(self, *args: Any) -> None:
                return None

        return Handler


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer().start()
    yield srv
    srv.stop()


def client_for(url: str, **kwargs: Any) -> Client:
    kwargs.setdefault("policies", FAST)
    return Client(url, "secret-token", kwargs.pop("timeout", 5.0), **kwargs)


# --------------------------------------------------------------------------- real HTTP


def test_register_sends_bearer_token_and_parses_answer(server: ScriptedServer) -> None:
    server.script["/api/v1/workers/register"].append((200, WORKER, 0))
    with client_for(server.url + "/") as client:  # trailing slash is tolerated
        info = client.register(WorkerRegistration(hostname="box", devices=["cpu"]))
    assert info.worker_id == "w-1"
    path, headers, body = server.requests[0]
    assert path == "/api/v1/workers/register"
    assert headers["Authorization"] == "Bearer secret-token"
    assert body["hostname"] == "box" and body["devices"] == ["cpu"]


def test_complete_retried_after_503_is_delivered_once(server: ScriptedServer) -> None:
    path = "/api/v1/leases/L1/complete"
    server.script[path].extend([(503, {"detail": "busy"}, 0), (503, {"detail": "busy"}, 0)])
    server.script[path].append((200, FINISHED, 0))
    body = CompleteRequest(state=FinishState.COMPLETE, value=0.91, metrics={"test_accuracy": 0.9})
    with client_for(server.url) as client:
        answer = client.complete("L1", body)
    assert answer.state == "complete" and answer.value == 0.91
    assert [status for _, status in server.answers(3)] == [503, 503, 200]
    bodies = [b for p, _, b in server.requests if p == path]
    assert len(bodies) == 3 and all(b == bodies[0] for b in bodies)  # the same request


def test_complete_is_delivered_when_the_server_comes_back() -> None:
    late = ScriptedServer()  # not listening yet: connection refused
    late.default["/api/v1/leases/L2/fail"] = (200, {**FINISHED, "state": "queued"}, 0)
    body = FailRequest(reason="worker shutting down", retry=True)
    result: dict[str, Any] = {}

    def call() -> None:
        with client_for(late.url) as client:
            result["answer"] = client.fail("L2", body)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)
    late.start()
    try:
        caller.join(timeout=30)
        assert result["answer"].state == "queued"
        assert late.answers(1) == [("/api/v1/leases/L2/fail", 200)]
    finally:
        late.stop()


def test_read_timeout_is_retried(server: ScriptedServer) -> None:
    path = "/api/v1/leases/L3/complete"
    server.script[path].append((200, FINISHED, 1.5))  # slower than the client's timeout
    server.script[path].append((200, FINISHED, 0))
    with client_for(server.url, timeout=0.5) as client:
        answer = client.complete("L3", CompleteRequest(value=0.5))
    assert answer.trial_id == 7
    assert len([p for p, _, _ in server.requests if p == path]) == 2


def test_lease_long_poll_gets_wait_s_on_top_of_the_timeout(server: ScriptedServer) -> None:
    answer = {"trial": None, "retry_after_s": 1.0, "reason": "no running study"}
    server.script["/api/v1/trials/lease"].append((200, answer, 1.2))
    with client_for(server.url, timeout=0.6) as client:
        got = client.lease(LeaseRequest(worker_id="w-1", wait_s=1.0))
    assert got.trial is None and got.reason == "no running study"
    assert len(server.requests) == 1  # answered within timeout + wait_s: no retry


def test_409_raises_lease_gone_with_detail_and_is_not_retried(server: ScriptedServer) -> None:
    path = "/api/v1/leases/L4/report"
    server.default[path] = (409, {"detail": "lease L4 expired"}, 0)
    with client_for(server.url) as client, pytest.raises(LeaseGone) as err:
        client.report("L4", ReportRequest(step=1, value=0.5))
    assert err.value.status_code == 409 and err.value.detail == "lease L4 expired"
    assert len(server.requests) == 1


def test_4xx_are_typed_and_not_retried(server: ScriptedServer) -> None:
    server.default["/api/v1/workers/register"] = (401, {"detail": "bad token"}, 0)
    server.default["/api/v1/trials/lease"] = (422, {"detail": [{"msg": "bad"}]}, 0)
    server.default["/api/v1/leases/L5/heartbeat"] = (404, {"detail": "no lease L5"}, 0)
    with client_for(server.url) as client:
        with pytest.raises(AuthError) as auth:
            client.register(WorkerRegistration(hostname="box"))
        with pytest.raises(ApiError) as invalid:
            client.lease(LeaseRequest(worker_id="w-1"))
        with pytest.raises(LeaseGone):  # 404 on a lease endpoint: the lease is unknown
            client.heartbeat("L5")
    assert auth.value.detail == "bad token"
    assert invalid.value.status_code == 422 and "bad" in invalid.value.detail
    assert not isinstance(invalid.value, LeaseGone)
    assert len(server.requests) == 3


def test_heartbeat_gives_up_after_bounded_attempts(server: ScriptedServer) -> None:
    server.default["/api/v1/leases/L6/heartbeat"] = (503, {"detail": "down"}, 0)
    with client_for(server.url) as client, pytest.raises(ServerUnavailable):
        client.heartbeat("L6", HeartbeatRequest(progress=0.5))
    assert len(server.requests) == FAST.heartbeat.max_attempts


def test_heartbeat_answer_carries_the_action(server: ScriptedServer) -> None:
    server.default["/api/v1/leases/L7/heartbeat"] = (200, {"action": "prune"}, 0)
    with client_for(server.url) as client:
        assert client.heartbeat("L7").action == Action.PRUNE


def test_register_waits_for_server_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    late = ScriptedServer()  # not listening for the first 0.8 s
    late.default["/api/v1/workers/register"] = (200, WORKER, 0)
    starter = threading.Timer(0.8, late.start)
    starter.start()
    try:
        with caplog.at_level(logging.INFO, "hpo.client"), client_for(late.url) as client:
            info = client.register(WorkerRegistration(hostname="box"), wait=True, deadline_s=30)
    finally:
        starter.join()
        late.stop()
    assert info.worker_id == "w-1"
    waiting = [r.getMessage() for r in caplog.records if "waiting for server" in r.getMessage()]
    assert len(waiting) == 1 and waiting[0].startswith(f"waiting for server at {late.url} ...")


def test_register_wait_is_bounded_by_the_deadline() -> None:
    never = ScriptedServer()  # never listens
    started = time.monotonic()
    try:
        with client_for(never.url) as client, pytest.raises(ServerUnavailable, match="giving up"):
            client.register(WorkerRegistration(hostname="box"), wait=True, deadline_s=0.5)
    finally:
        never.stop()
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- retry sequencing
# httpx.MockTransport from here on: only the order and size of the backoff delays matter.


class UpperBound(random.Random):
    """'Jitter' that always picks the upper bound, so the exponential part is visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


def scripted_transport(answers: list[Any]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


def test_backoff_is_exponential_and_capped() -> None:
    answers = [httpx.Response(503)] * 5 + [httpx.Response(200, json=FINISHED)]
    transport, seen = scripted_transport(answers)
    delays: list[float] = []
    policies = RetryPolicies(finish=RetryPolicy(None, None, base_s=1.0, cap_s=4.0))
    client = Client(
        "http://x", policies=policies, sleep=delays.append, rng=UpperBound(), transport=transport
    )
    client.complete("L", CompleteRequest(value=0.1))
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(seen) == 6


def test_delay_stays_bounded_after_thousands_of_attempts() -> None:
    # An idle worker retries for days: 2**attempt must not overflow a float.
    policy = RetryPolicy(None, None, 0.5, 10.0)
    assert 0.0 <= policy.delay(100_000, 0.0, random.Random(1)) <= 10.0  # type: ignore[operator]


def test_full_jitter_stays_within_the_bound() -> None:
    policy = RetryPolicy(None, None, base_s=0.5, cap_s=8.0)
    rng = random.Random(1)
    for attempt in range(1, 12):
        bound = min(8.0, 0.5 * 2 ** (attempt - 1))
        samples = [policy.delay(attempt, 0.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= bound for s in samples)  # type: ignore[operator]
        assert max(samples) > bound / 2  # type: ignore[type-var]  # really spread out


def test_policy_limits_attempts_and_total_time() -> None:
    rng = UpperBound()
    assert RetryPolicy(3, None, 1.0, 10.0).delay(3, 0.0, rng) is None
    timed = RetryPolicy(None, 10.0, 1.0, 60.0)
    assert timed.delay(5, 9.0, rng) == 1.0  # 16 s clipped to the 1 s left
    assert timed.delay(5, 10.0, rng) is None


def test_connection_errors_are_retried_then_answer_parsed() -> None:
    answers: list[Any] = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(502),
        httpx.Response(504),
        httpx.Response(200, json=FINISHED),
    ]
    transport, seen = scripted_transport(answers)
    client = Client("http://x", sleep=lambda s: None, transport=transport)
    assert client.complete("L", CompleteRequest(value=0.2)).trial_id == 7
    assert len(seen) == 5


def test_report_gives_up_quickly_so_training_goes_on() -> None:
    transport, seen = scripted_transport([httpx.ConnectError("refused")] * 10)
    delays: list[float] = []
    client = Client("http://x", sleep=delays.append, transport=transport)
    with pytest.raises(ServerUnavailable):
        client.report("L", ReportRequest(step=1, value=0.2))
    assert len(seen) == 3 and sum(delays) <= 4.0


def test_retry_after_header_is_honoured() -> None:
    answers = [httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(200, json=WORKER)]
    transport, _ = scripted_transport(answers)
    delays: list[float] = []
    client = Client("http://x", sleep=delays.append, transport=transport)
    client.register(WorkerRegistration(hostname="box"))
    assert delays and delays[0] >= 3.0


def test_500_is_not_retried() -> None:
    transport, seen = scripted_transport([httpx.Response(500, json={"detail": "bug"})])
    client = Client("http://x", sleep=lambda s: None, transport=transport)
    with pytest.raises(ApiError, match="bug"):
        client.complete("L", CompleteRequest(value=0.1))
    assert len(seen) == 1


def test_stop_interrupts_lease_retries_but_not_complete() -> None:
    stop = threading.Event()
    stop.set()
    answers = [httpx.Response(503), httpx.Response(503), httpx.Response(200, json=FINISHED)]
    transport, seen = scripted_transport(answers)
    client = Client("http://x", stop=stop, sleep=lambda s: None, transport=transport)
    with pytest.raises(ClientAborted):
        client.lease(LeaseRequest(worker_id="w"))
    assert len(seen) == 1
    assert client.complete("L", CompleteRequest(value=0.3)).trial_number == 3  # still delivered
    assert len(seen) == 3
