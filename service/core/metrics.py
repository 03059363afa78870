"""Prometheus metrics of one app (a registry per app, so tests stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    """Counters and histograms exported at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.leases_granted = Counter(
            "hpo_leases_granted", "Trial leases handed to workers", registry=self.registry
        )
        self.trials_finished = Counter(
            "hpo_trials_finished",
            "Trials finished, by final state",
            ["state"],
            registry=self.registry,
        )
        self.leases_expired = Counter(
            "hpo_leases_expired", "Leases that expired without completion", registry=self.registry
        )
        self.request_latency = Histogram(
            "hpo_request_latency_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
