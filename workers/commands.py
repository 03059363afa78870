"""``--command "CMD ..."``: one child process per trial, in its own process group.

The child gets the trial through its environment: ``HPO_TRIAL`` (the lease's
trial spec as JSON, which ``hpo.current_trial()`` and ``hpo.run(objective)``
read), ``HPO_SERVER``/``HPO_TOKEN``, ``HPO_PARAMS`` (the parameters as JSON),
``HPO_DATA_DIR`` (the worker's ``--data-dir``), ``HPO_CHECKPOINT_DIR`` and
``HPO_RESUME_STEP`` (its checkpoint folder, filled on a re-run, and the step),
and, unless ``--no-param-args``, the parameters as ``--name=value`` arguments.
A program that is not Python reports on its standard output instead::

    hpo.report step=3 value=0.91 train_loss=0.21     (one per epoch)
    hpo.result value=0.93                             (or values=0.93,12000)

The worker keeps the lease alive meanwhile. A prune (from a report's or a
heartbeat's answer) gives the child ``grace_s`` to finish the trial itself,
then SIGTERM, then SIGKILL after another ``grace_s``; a stopped study, a lost
lease, a shutdown or ``--timeout`` send SIGTERM at once. When the child exits,
the worker sends the attempt's one final call: the result it printed, pruned,
failed with the tail of its stderr, or the attempt given back when the lease
was lost; when the child already finished the trial through ``hpo.run`` the
server answers its stored result and nothing changes.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hpo.client import Client
from hpo.protocol import TrialSpec
from hpo.running import Ending, Result, abandoned, preempted
from hpo.trial import Control, Trial, new_trial, trial_label
from workers.runner import TrialEnd, checkpoint_folder, compact, finish
from workers.steering import Heartbeat
from workers.telemetry import DeviceProbe, Telemetry

log = logging.getLogger(__name__)

STDERR_TAIL = 40  # lines of the child's stderr kept for a failure message
POLL_S = 0.1


@dataclass
class CommandEnv:
    """What every attempt of a command worker shares."""

    client: Client
    make_client: Any
    shutdown: threading.Event
    argv: list[str]
    server: str
    token: str | None
    timeout_s: float | None = None
    grace_s: float = 10.0
    param_args: bool = True
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES for the child (None: inherit)
    data_dir: str | None = None  # --data-dir, passed on as HPO_DATA_DIR
    checkpoint_root: str | None = None  # --checkpoint-dir: where HPO_CHECKPOINT_DIR goes
    probe: DeviceProbe | None = None  # samples device utilisation while a trial runs


@dataclass
class _Child:
    """A running child and what its output said so far."""

    proc: subprocess.Popen[str]
    stderr: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL)
    )
    result: list[float] | None = None
    readers: list[threading.Thread] = field(default_factory=list)


def parse_command(command: str) -> list[str]:
    """The argv of ``--command``; ValueError when it is empty or cannot be split."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("--command is empty")
    return argv


def check_executable(program: str) -> None:
    """ValueError naming ``program`` when it cannot be run (so the worker exits at start)."""
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise ValueError(f"--command: {program!r} is not an executable file")
    elif shutil.which(program) is None:
        raise ValueError(f"--command: {program!r} not found on PATH")


def child_env(env: CommandEnv, spec: TrialSpec) -> dict[str, str]:
    """The child's environment: the trial, the server, the parameters (and its GPUs)."""
    out = dict(os.environ)
    out.update(
        HPO_TRIAL=spec.model_dump_json(),
        HPO_SERVER=env.server,
        HPO_PARAMS=json.dumps(spec.params),
        HPO_LEASE_ID=spec.lease_id,
        HPO_STUDY=spec.study_name,
        HPO_TRIAL_NUMBER=str(spec.trial_number),
    )
    out.pop("HPO_TOKEN", None)
    if env.token:
        out["HPO_TOKEN"] = env.token
    if env.gpus is not None:
        out["CUDA_VISIBLE_DEVICES"] = env.gpus
    if env.data_dir:
        out["HPO_DATA_DIR"] = env.data_dir
    return out


def checkpoint_env(trial: Trial) -> dict[str, str]:
    """``HPO_CHECKPOINT_DIR`` (the attempt's folder), ``HPO_RESUME_STEP`` (empty: fresh
    start) and ``HPO_RESUME`` (the checkpoint restored, as JSON) for the child."""
    if trial.checkpoints is None:
        return {}
    resume = trial.checkpoints.resume
    return {
        "HPO_CHECKPOINT_DIR": str(trial.checkpoints.folder),
        "HPO_RESUME_STEP": "" if resume is None else str(resume.step),
        "HPO_RESUME": "" if resume is None else resume.model_dump_json(),
    }


def child_argv(env: CommandEnv, spec: TrialSpec) -> list[str]:
    """``--command``'s argv, plus ``--name=value`` per parameter unless turned off."""
    extra = [f"--{name}={_arg(value)}" for name, value in spec.params.items()]
    return [*env.argv, *(extra if env.param_args else [])]


def _arg(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool | type(None)) else str(value)


def run_command_trial(env: CommandEnv, spec: TrialSpec) -> TrialEnd:
    """Run one leased attempt as a child process; never raises for a trial-level problem."""
    log.info(
        "leased %s attempt %d params=%s", trial_label(spec), spec.attempt, compact(spec.params)
    )
    control = Control(env.shutdown)
    trial = new_trial(env.client, spec, control)
    if env.shutdown.is_set():
        return finish(env.client, trial, abandoned(preempted=True))
    with checkpoint_folder(env.checkpoint_root, spec) as folder:
        trial.attach_checkpoints(folder)
        return _run_child(env, spec, trial)


def _run_child(env: CommandEnv, spec: TrialSpec, trial: Trial) -> TrialEnd:
    control = trial.control
    try:
        child = _start(env, spec, trial)
    except OSError as exc:
        reason = f"command could not start: {exc}"
        return finish(env.client, trial, Result(Ending.FAILED, reason=reason, diagnosis="error"))
    telemetry = Telemetry((env.probe or DeviceProbe("cpu")).for_process(child.proc.pid))
    with telemetry, Heartbeat(env.make_client, spec, control, lambda: None, telemetry.latest):
        timed_out = _supervise(env, child, control)
    trial.telemetry = telemetry.summary()
    for reader in child.readers:
        reader.join(timeout=5.0)
    return finish(env.client, trial, _judge(env, child, trial, timed_out))


def _start(env: CommandEnv, spec: TrialSpec, trial: Trial) -> _Child:
    proc = subprocess.Popen(  # the user's own command, from the worker's flags
        child_argv(env, spec),
        env={**child_env(env, spec), **checkpoint_env(trial)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: the whole job is signalled at once
        preexec_fn=_die_with_worker,
    )
    child = _Child(proc)
    child.readers = [
        threading.Thread(target=_read_stdout, args=(child, trial), daemon=True),
        threading.Thread(target=_read_stderr, args=(child, trial.label), daemon=True),
    ]
    for reader in child.readers:
        reader.start()
    log.info("%s: started %s (pid %d)", trial.label, shlex.join(env.argv), proc.pid)
    return child


def _die_with_worker() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the worker dies (even by SIGKILL), so a killed
    worker leaves no training process behind to compete with the trial's re-run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _supervise(env: CommandEnv, child: _Child, control: Control) -> bool:
    """Wait for the child, signalling it when the trial must end; True if it timed out."""
    started = time.monotonic()
    prune_seen: float | None = None
    while child.proc.poll() is None:
        now = time.monotonic()
        if control.drop.is_set() or control.shutdown.is_set():
            _stop(child, env.grace_s)
        elif env.timeout_s is not None and now - started > env.timeout_s:
            _stop(child, env.grace_s)
            return True
        elif control.prune.is_set():
            prune_seen = prune_seen or now
            if now - prune_seen > env.grace_s:  # it had its chance to finish as pruned
                _stop(child, env.grace_s)
        time.sleep(POLL_S)
    return False


def _stop(child: _Child, grace_s: float) -> None:
    """SIGTERM to the child's process group, then SIGKILL after ``grace_s``."""
    _signal(child, signal.SIGTERM)
    try:
        child.proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal(child, signal.SIGKILL)
        child.proc.wait()


def _signal(child: _Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.proc.pid, sig)


def _judge(env: CommandEnv, child: _Child, trial: Trial, timed_out: bool) -> Result:
    """The attempt's result from how the child ended and what it printed."""
    control, code = trial.control, child.proc.returncode
    if control.drop.is_set():
        # Usually the lease is gone; but the process may have finished the trial itself
        # just before (then the server answers its stored result). Giving the attempt
        # back is right in every case: a lease already re-leased elsewhere gets a 409.
        return abandoned(f"dropped: {control.drop_reason}")
    if control.shutdown.is_set() and code != 0:
        return preempted(trial)
    if timed_out:
        return Result(Ending.FAILED, reason=f"timed out after {env.timeout_s:g} s (--timeout)")
    if control.prune.is_set():
        values = None if trial.last_value is None else [trial.last_value]
        return Result(Ending.PRUNED, values=values)
    if code == 0 and child.result is not None:
        return Result(Ending.COMPLETED, values=child.result)
    return Result(Ending.FAILED, reason=_exit_reason(code, child), diagnosis="error")


def _exit_reason(code: int, child: _Child) -> str:
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    elif code == 0:
        how = "exited with code 0 without finishing the trial (no hpo.run, no hpo.result line)"
    else:
        how = f"exited with code {code}"
    tail = "".join(child.stderr).strip()[-1500:]
    return f"the command {how}" + (f"; stderr ends with:\n{tail}" if tail else "")


# --------------------------------------------------------------------------- output


def _read_stdout(child: _Child, trial: Trial) -> None:
    assert child.proc.stdout is not None
    for line in child.proc.stdout:
        text = line.rstrip("\n")
        log.info("%s | %s", trial.label, text)
        try:
            _parse(text, child, trial)
        except (ValueError, KeyError) as exc:
            log.warning("%s: ignored malformed line %r: %s", trial.label, text, exc)


def _read_stderr(child: _Child, label: str) -> None:
    assert child.proc.stderr is not None
    for line in child.proc.stderr:
        child.stderr.append(line)
        log.info("%s ! %s", label, line.rstrip("\n"))


def _parse(text: str, child: _Child, trial: Trial) -> None:
    """``hpo.report step=N value=V [k=v...]`` or ``hpo.result value=V | values=V1,V2``."""
    kind, _, rest = text.strip().partition(" ")
    if kind not in ("hpo.report", "hpo.result"):
        return
    fields = dict(part.split("=", 1) for part in rest.split())
    if kind == "hpo.result":
        raw = fields["values"] if "values" in fields else fields["value"]
        child.result = [float(v) for v in raw.split(",")]
        return
    step, value = int(fields.pop("step")), float(fields.pop("value"))
    metrics = {k: _number(v) for k, v in fields.items()}
    trial.report(value, step, metrics)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text
