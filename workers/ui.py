"""Console output of the worker: one log line per event, a rich bar only on a terminal.

When stderr is not a TTY (services, containers, tests) logs are plain lines
``time level name[pid]: message`` and there is no progress bar; on a terminal
they go through rich, sharing one console with the per-trial epoch bar so the
two do not overwrite each other. rich is imported only in the terminal case.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from workers.steering import NoProgress, Progress

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

_console: Any = None


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _rich_console() -> Any:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once per process (idempotent)."""
    root = logging.getLogger()
    if not getattr(setup_logging, "_done", False):
        if _is_tty():
            from rich.logging import RichHandler

            handler: logging.Handler = RichHandler(
                console=_rich_console(), show_path=False, log_time_format="%H:%M:%S"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.handlers[:] = [handler]
        # httpx logs every request at INFO: far more than one line per event.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        setup_logging._done = True  # type: ignore[attr-defined]
    root.setLevel(level.upper())


class RichProgress:
    """One transient bar per trial: epochs done out of the trial's epochs."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=_rich_console(),
            transient=True,
        )
        self._task: Any = None

    def start(self, label: str, total: int) -> None:
        """Show a bar for a trial of ``total`` epochs."""
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, info="")

    def advance(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Move the bar to ``epoch`` and show the latest validation accuracy."""
        if self._task is not None:
            acc = metrics.get("val_accuracy")
            info = f"val_acc {acc:.4f}" if isinstance(acc, float) else ""
            self._progress.update(self._task, completed=epoch, info=info)

    def stop(self) -> None:
        """Remove the bar."""
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self._progress.stop()


def make_progress() -> Progress:
    """A rich bar when stderr is a terminal, else a no-op."""
    return RichProgress() if _is_tty() else NoProgress()
