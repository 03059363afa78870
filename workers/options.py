"""Every option of a worker daemon, declared once.

:class:`WorkerOptions` is the one place an option is named, typed, bounded and
described: the ``hpo worker`` command line is generated from it
(:mod:`workers.cli`), the daemon and the per-GPU supervisor read it, and the
supervisor hands it to its children as JSON (``HPO_WORKER_OPTIONS``), so no
list of options is written out twice. Exit codes of the worker process are
here too.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpo.settings import REFERENCE_WORKLOAD

#: Environment variable through which the supervisor passes options to a child.
OPTIONS_ENV = "HPO_WORKER_OPTIONS"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ExitCode(IntEnum):
    """How a worker process ends (the supervisor, systemd and SLURM act on these)."""

    OK = 0  # signal, --max-trials, --idle-exit, or its studies are done
    ERROR = 1  # unexpected error
    CONFIG = 2  # configuration problem (data, device, token, server deadline): no restart
    DEVICE = 3  # device error: restart me so the device is re-initialised


def option(default: Any, flag: str | None, help: str, envvar: str | None = None, **kw: Any) -> Any:
    """A field that is also a command-line option (``flag`` None: not on the command line)."""
    extra = {"flag": flag, "envvar": envvar} if flag else {}
    return Field(default, description=help, json_schema_extra=extra, **kw)


class WorkerOptions(BaseModel):
    """Everything one worker daemon needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: str | None = option(
        None, "--objective", "MODULE:FUNCTION: run this Optuna-style objective for each trial"
    )
    command: str | None = option(
        None, "--command", "run this command for each trial, one child process per trial"
    )
    workload: str | None = option(
        None,
        "--workload",
        f"the workload this worker runs (needed with --objective/--command; "
        f"default: the built-in {REFERENCE_WORKLOAD})",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=64,
    )
    trial_timeout_s: float | None = option(
        None, "--timeout", "fail a --command trial that runs longer than this (seconds)", gt=0
    )
    pack: int | Literal["auto"] | None = option(
        None,
        "--pack",
        "train up to K trials of the built-in trainer as one fused model per device "
        "(or 'auto': as many as fit the device)",
    )
    prune_grace_s: float = option(
        10.0,
        "--prune-grace",
        "seconds a pruned --command trial gets to end itself before SIGTERM (then SIGKILL)",
        ge=0,
    )
    gpus_per_trial: int | None = option(
        None,
        "--gpus-per-trial",
        "GPUs per --command trial (CUDA_VISIBLE_DEVICES of the child; e.g. a torchrun job)",
        ge=1,
        le=64,
    )
    grace_s: float = option(
        30.0,
        "--grace",
        "on SIGTERM (preemption): seconds to checkpoint the running trials and hand their "
        "leases back as preempted before the process exits regardless",
        ge=0,
    )
    checkpoint_root: str | None = option(
        None,
        "--checkpoint-dir",
        "local folder for the running trials' checkpoint folders (default: the system's "
        "temporary folder)",
        "HPO_WORKER_CHECKPOINT_DIR",
    )
    param_args: bool = option(
        True, "--param-args", "also pass a --command trial's parameters as --name=value arguments"
    )
    server: str = option(
        ..., "--server", "server URL, e.g. http://hpo:8000", "HPO_SERVER", min_length=1
    )
    token: str | None = option(None, "--token", "API token with the worker role", "HPO_TOKEN")
    device: str = option("auto", "--device", "cpu, cuda, cuda:N or auto (cuda if available)")
    gpus: str | None = option(
        None, "--gpus", '"all" or "0,1": one worker process per GPU (device cuda or auto)'
    )
    studies: list[str] | None = option(
        None, "--studies", "comma-separated study names to take work from (default: any)"
    )
    max_trials: int | None = option(
        None, "--max-trials", "exit 0 after this many trials (per GPU process)", ge=1
    )
    idle_exit_s: float | None = option(
        None,
        "--idle-exit",
        "exit 0 after this many seconds without work, or once the --studies are all finished",
        gt=0,
    )
    data_dir: str | None = option(
        None, "--data-dir", "MNIST root (the folder with MNIST/raw)", "HPO_DATA_DIR"
    )
    download: bool = option(
        False,
        "--download",
        "download MNIST into --data-dir when it is missing (needs network)",
        "HPO_DOWNLOAD",
    )
    log_level: str = option("INFO", "--log-level", "DEBUG, INFO, WARNING or ERROR")
    name: str | None = option(
        None, "--name", "worker name shown in the registry (default host:device:pid)"
    )
    idle_backoff_s: float = option(
        10.0, "--idle-backoff", "longest wait in seconds between idle lease requests", ge=0.1
    )
    server_wait_s: float | None = option(
        None,
        "--server-wait",
        "give up after this many seconds if the server is down at start (default: wait forever)",
        ge=0,
    )
    wait_s: float = option(5.0, None, "long-poll on the server per lease request", ge=0, le=30)
    http_timeout_s: float = option(30.0, None, "HTTP timeout per request", gt=0)

    @field_validator("studies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # "a, b," from the command line
            value = [name.strip() for name in value.split(",") if name.strip()]
        return value or None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @model_validator(mode="after")
    def _one_kind(self) -> WorkerOptions:
        if self.objective and self.command:
            raise ValueError("--objective and --command exclude each other")
        if (self.objective or self.command) and not self.workload:
            raise ValueError(
                "--workload: name the workload this worker runs (the studies' `workload:`)"
            )
        if self.pack is not None and (self.objective or self.command):
            raise ValueError(
                "--pack trains the built-in trainer's trials fused: not with "
                "--objective or --command"
            )
        if self.workload == REFERENCE_WORKLOAD and (self.objective or self.command):
            raise ValueError(f"--workload {REFERENCE_WORKLOAD} is the built-in trainer's name")
        return self

    @property
    def workloads(self) -> list[str]:
        """The workloads this worker runs (leases match studies' ``workload:``)."""
        return [self.workload or REFERENCE_WORKLOAD]

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "auto":
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"must be a number of trials or 'auto', got {value!r}") from None
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError(f"must be between 1 and 64 trials, got {value}")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "token",
        "gpus",
        "data_dir",
        "name",
        "objective",
        "command",
        "checkpoint_root",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
