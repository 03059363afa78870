"""A progress bar for ``Client.wait`` (rich, on stderr; nothing when turned off)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hpo.schemas import StudySummary


class _Quiet:
    def update(self, summary: StudySummary) -> None:
        return None


class _Bar:
    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._task: Any = None

    def update(self, summary: StudySummary) -> None:
        c = summary.counts
        done = c.complete + c.pruned + c.fail
        text = f"{summary.name}: {c.running + c.queued} running, best {_best(summary)}"
        if self._task is None:
            self._task = self._progress.add_task(text, total=summary.max_trials)
        self._progress.update(self._task, completed=done, description=text)


def _best(summary: StudySummary) -> str:
    if summary.best_trial is not None and summary.best_trial.value is not None:
        return f"{summary.best_trial.value:.4g}"
    if summary.best_trials:
        return f"{len(summary.best_trials)} on the front"
    return "-"


@contextmanager
def study_progress(show: bool) -> Iterator[Any]:
    """A bar with ``update(summary)``; a silent stand-in when ``show`` is false."""
    if not show:
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield _Bar(progress)
