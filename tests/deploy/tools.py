"""What the deployment checks share: a missing tool skips, or fails where CI requires it."""

from __future__ import annotations

import os

import pytest


def missing(what: str) -> None:
    """Skip for want of ``what``; fail instead when ``HPO_REQUIRE_DEPLOY`` (or, when it is
    unset, ``HPO_REQUIRE_COMPOSE``) is 1, as in CI."""
    required = os.environ.get("HPO_REQUIRE_DEPLOY")
    if required is None:
        required = os.environ.get("HPO_REQUIRE_COMPOSE")
    if required == "1":
        pytest.fail(f"{what} is required for the deployment checks (HPO_REQUIRE_DEPLOY=1)")
    pytest.skip(f"{what} not available")
