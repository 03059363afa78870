"""Fault-suite fixtures: a figures collector printed at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

FIGURES: dict[str, str] = {}


@pytest.fixture
def figures() -> dict[str, str]:
    return FIGURES


@pytest.fixture(scope="session", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\n===== fault-suite figures =====")
        for key, value in FIGURES.items():
            print(f"{key}: {value}")
