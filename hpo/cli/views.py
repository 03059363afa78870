"""Rich tables of the ``hpo study`` commands (answers as :mod:`hpo.schemas` models)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from hpo.schemas import (
    StudyDiagnosis,
    StudyPage,
    StudyStatus,
    StudySummary,
    TrialItem,
    WaitingOn,
)


def print_study_page(page: StudyPage) -> None:
    """Studies with their trial counts, and which slice of the total is shown."""
    table = Table("id", "name", "status", "sampler", "pruner", "done", "running", "failed", "total")
    for s in page.items:
        c = s.counts
        table.add_row(
            str(s.study_id),
            s.name,
            label(s.status, s.waiting_on),
            s.sampler,
            s.pruner,
            str(c.complete + c.pruned),
            str(c.running + c.queued),
            str(c.fail),
            f"{c.total}/{s.max_trials}",
        )
    console = Console()
    console.print(table)
    shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "none"
    console.print(f"{page.total} studies (showing {shown})", markup=False)


def label(status: StudyStatus, waiting_on: WaitingOn | None) -> str:
    """The study's label as the dashboard shows it: ``waiting (no_workers)``."""
    return f"{status} ({waiting_on})" if waiting_on is not None else str(status)


def print_summary(study: StudySummary) -> None:
    """A study's identity, its trial counts and its best trial (or Pareto front)."""
    console = Console()
    info = Table("field", "value", show_header=False, title=f"study {study.name}")
    info.add_row("status", label(study.status, study.waiting_on))
    if study.waiting_reason:
        info.add_row("waiting because", study.waiting_reason)
    for key in ("study_id", "state", "directions", "objectives", "sampler", "pruner", "seed"):
        value = getattr(study, key)
        info.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(info)
    counts = study.counts.model_dump()
    table = Table(*counts.keys(), title="trials")
    table.add_row(*(str(v) for v in counts.values()))
    console.print(table)
    best = [study.best_trial] if study.best_trial else study.best_trials or []
    if not best:
        console.print("no complete trial yet", markup=False)
        return
    title = "best trial" + ("s" if len(best) > 1 else "")
    table = Table("number", "value(s)", "params", title=title)
    for trial in best[:20]:
        values = ", ".join(fmt(v) for v in trial.values)
        params = ", ".join(f"{k}={fmt(v)}" for k, v in trial.params.items())
        table.add_row(str(trial.number), values, params)
    console.print(table)


def print_trials(ref: str, items: list[TrialItem]) -> None:
    """One row per trial: number, state, value, attempts and parameters."""
    table = Table("number", "state", "value", "attempts", "params", title=f"trials of {ref}")
    for t in items:
        value = ", ".join(fmt(v) for v in t.values) if t.values else fmt(t.value)
        params = ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
        table.add_row(str(t.number), t.state, value, str(t.attempts), params)
    Console().print(table)


def print_diagnosis(found: StudyDiagnosis) -> None:
    """Findings per kind, then each proposed spec edit with its evidence."""
    console = Console()
    kinds = ", ".join(f"{kind} {n}" for kind, n in found.findings.items()) or "none"
    console.print(
        f"study {found.study}: {found.trials} finished trials; findings: {kinds}", markup=False
    )
    if not found.proposals:
        console.print("no proposal: no region of the space stands out", markup=False)
        return
    table = Table("edit", "why", title="proposed spec edits")
    for p in found.proposals:
        edit = f"{p.edit.path}: {fmt(p.edit.old)} -> {fmt(p.edit.new)}"
        table.add_row(edit, p.message)
    console.print(table)


def fmt(value: Any) -> str:
    """Floats with six significant digits; anything else as text."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def human_bytes(size: int, exact: bool = False) -> str:
    """``1234567`` -> ``1.2 MB`` (``exact``: ``1.2 MB (1,234,567 bytes)``); below 1 kB in bytes."""
    if size < 1000:
        return f"{size} byte{'s' * (size != 1)}"
    value, units = size / 1000, ["kB", "MB", "GB", "TB", "PB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.1f} {units[0]}" + (f" ({size:,} bytes)" if exact else "")
