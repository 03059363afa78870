"""One vocabulary: states are compared as enum members, never as string literals.

A test of the source (issue 27 part 1): in ``hpo/``, ``service/`` and ``workers/``,
no comparison (``==``, ``!=``, ``in``, ``not in``) has a state word as a literal
operand (``summary.state == "stopped"``); the enums in :mod:`hpo.protocol`,
:mod:`hpo.schemas` and :mod:`service.trials.states` are the one place those words
are written. A misspelt literal compares false silently; an enum member cannot.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE_WORDS = set(
    [
        "complete",
        "completed",
        "pruned",
        "fail",
        "failed",
        "running",
        "queued",
        "waiting",
        "finished",
        "leased",
        "expired",
        "abandoned",
        "finishing",
        "active",
        "paused",
        "stopped",
    ]
)


def _literals(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for item in node.elts:
            yield from _literals(item)


def state_literals_compared(source: str) -> list[tuple[int, str]]:
    """(line, word) of every comparison with a state word as a literal operand."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                found += [(node.lineno, w) for w in _literals(operand) if w in STATE_WORDS]
    return found


def test_no_state_is_compared_as_a_string_literal() -> None:
    offences = []
    for package in ("hpo", "service", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, word in state_literals_compared(path.read_text(encoding="utf-8")):
                offences.append(f"{path.relative_to(ROOT)}:{line} compares with {word!r}")
    assert offences == [], "\n".join(offences)


def test_the_check_can_fail() -> None:
    source = 'if summary.state == "stopped" or s in ("pruned", "fail"):\n    pass\n'
    assert state_literals_compared(source) == [(1, "stopped"), (1, "pruned"), (1, "fail")]
    assert state_literals_compared("if s == State.STOPPED:\n    pass\n") == []


def test_the_formatter_owns_formatting() -> None:
    markers = ("fmt: " + "skip", "fmt: " + "off")  # spelt apart: this file is scanned too
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("hpo", "hpo_cli", "service", "workers", "tests", "bench", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(marker in line for marker in markers)
    ]
    assert found == [], f"formatter markers (ruff format owns the layout): {found}"
