"""Fixtures shared by the service tests (on top of ``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from tests.service.lease_helpers import Worker


@pytest.fixture
def worker(client, tokens) -> Worker:  # type: ignore[no-untyped-def]
    """A worker registered through the in-process app's TestClient (a file that needs
    another kind of worker defines its own ``worker`` fixture)."""
    return Worker(client, tokens.worker)
