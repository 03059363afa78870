"""A FAKE worker for the fault-injection suite: no training, only the protocol.

It speaks the real trial protocol through :class:`hpo.client.Client`
(with its retry/backoff policies): register, lease (short long-poll), report
``--steps`` intermediate values with short sleeps and a heartbeat after each,
then complete with a value derived from the parameters. The point is the
protocol under crashes, not training, so a trial takes well under a second.

Each successful ``complete`` prints ``COMPLETED trial=<id> number=<n> lease=<id>``
so the test can count completions per trial. The loop is bounded by
``--max-seconds`` and exits on its own once no running study has work left
for a while (``--idle-exit``).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpo.client import Client
from hpo.protocol import (
    CompleteRequest,
    LeaseRequest,
    ReportRequest,
    WorkerRegistration,
)
from hpo.transport import ApiError, ClientError, LeaseGone


def fake_value(params: dict) -> float:
    total = 0.0
    for value in params.values():
        if isinstance(value, (int, float)):
            total += float(value)
    return round(total % 1.0, 6)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--step-sleep", type=float, default=0.15)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--idle-exit", type=float, default=1e9)
    args = ap.parse_args()
    token = os.environ["HPO_TOKEN"]
    deadline = time.monotonic() + args.max_seconds
    client = Client(args.server, token, timeout=10)
    info = client.register(
        WorkerRegistration(
            hostname=socket.gethostname(), name=f"fake-{os.getpid()}", workloads=["fake"]
        ),
        wait=True,
        deadline_s=args.max_seconds,
    )
    print(f"REGISTERED {info.worker_id}", flush=True)
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            resp = client.lease(
                LeaseRequest(worker_id=info.worker_id, studies=[args.study], wait_s=1.0)
            )
        except ClientError as exc:
            print(f"LEASE-ERROR {exc}", flush=True)
            if isinstance(exc, ApiError) and exc.status_code >= 500:
                print(f"SERVER-ERROR {exc.status_code}", flush=True)
            time.sleep(0.5)
            continue
        if resp.trial is None:
            if time.monotonic() - idle_since > args.idle_exit:
                print(f"IDLE-EXIT {resp.reason}", flush=True)
                return 0
            time.sleep(min(resp.retry_after_s or 0.3, 1.0))
            continue
        idle_since = time.monotonic()
        t = resp.trial
        print(
            f"LEASED trial={t.trial_id} number={t.trial_number} lease={t.lease_id} "
            f"attempt={t.attempt}",
            flush=True,
        )
        try:
            dropped = False
            for step in range(1, args.steps + 1):
                time.sleep(args.step_sleep)
                ans = client.report(t.lease_id, ReportRequest(step=step, value=step / 10))
                client.heartbeat(t.lease_id)
                if ans.action != "continue":
                    dropped = True
                    break
            if dropped:
                continue
            done = client.complete(
                t.lease_id, CompleteRequest(value=fake_value(t.params), metrics={"fake": 1})
            )
            print(
                f"COMPLETED trial={t.trial_id} number={t.trial_number} lease={t.lease_id} "
                f"state={done.state}",
                flush=True,
            )
        except LeaseGone as exc:
            print(
                f"LEASE-GONE trial={t.trial_id} lease={t.lease_id}: {exc.status_code}", flush=True
            )
        except ApiError as exc:
            print(f"API-ERROR {exc}", flush=True)
            if exc.status_code >= 500:
                print(f"SERVER-ERROR {exc.status_code}", flush=True)
        except ClientError as exc:
            print(f"CLIENT-ERROR {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
