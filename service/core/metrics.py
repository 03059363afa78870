"""Prometheus metrics of one app (a registry per app, so tests stay isolated).

With several server processes (``hpo server --workers N``) the counters and
histograms run in Prometheus' multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set by ``hpo server``): each process writes its values to files and ``/metrics``
adds up every process's, whichever process answers the scrape. Gauges of the
service's state (trials waiting and running per study, live workers) are read
from the database at scrape time, so every process reports the same values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric


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
        seconds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.lease_latency = Histogram(
            "hpo_lease_seconds",
            "Time to answer a lease request (long-poll waits included)",
            registry=self.registry,
            buckets=seconds,
        )
        self.proposal_age = Histogram(
            "hpo_proposal_age_seconds",
            "Age of a pooled proposal when a lease takes it",
            registry=self.registry,
            buckets=(*seconds, 60, 300),
        )
        self.proposal_sample = Histogram(
            "hpo_proposal_sample_seconds",
            "Sampler time per pooled proposal (the refill, off the request path)",
            registry=self.registry,
            buckets=seconds,
        )

    def render(self, families: Iterable[Metric] = ()) -> bytes:
        """The exposition text: this app's (or every process's) counters, plus ``families``."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        state = CollectorRegistry()
        state.register(_Snapshot(list(families)))
        return generate_latest(registry) + generate_latest(state)


class _Snapshot:
    """A collector that yields metric families computed for this one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)
