"""``hpo worker --pack K``: lease trials K at a time and train them fused, one pack per device.

The worker asks for a batch (``max_trials: K``); the trials of the built-in
trainer that can share a pack (same architecture and batch size:
:func:`workers.packs.pack_key`) train as one stacked model
(:func:`workers.packs.train_pack`); trials that fit no pack run solo. Each
member is still a trial: its own :class:`hpo.Trial`, reports every epoch,
is pruned alone (it leaves the pack at the epoch boundary), and ends with its
own final call. While members run, freed slots are refilled with newly leased
trials that fit the pack (continuous batching); a leased trial that does not
fit waits for the next pack (its lease kept alive meanwhile). One thread beats
every member's lease; a lost lease drops that member alone. On CUDA out of
memory the pack halves itself; no trial fails for it.

Each member has its own checkpoint folder and file (workers.packs.member), so a
re-run continues it in any pack or solo. A trial whose checkpoint is a solo
run's, or one a pack cannot read, trains solo: the solo path reads both formats
and falls back from an unreadable one.

PBT: a segment's member pauses at the segment's end and is handed back like any
paused trial; the server decides its successor at once, and the refill that
follows leases it. A successor whose parent (``Checkpoint.inherited_from``: its
own last segment, or the member it exploits) left this pack at that epoch end
continues the parent's state from the pack's rows with its own hyperparameters
(workers.packs.lineage), not from the parent's file; others continue from the
parent's checkpoint (a pack member's file is re-labelled for the segment's
settings, a solo run's trains solo). Every segment is its own trial and writes
its own checkpoints, so a crash resumes as before.
"""

from __future__ import annotations

import logging
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo.client import Client
from hpo.protocol import LeaseRequest, TrialSpec
from hpo.running import Ending, Result, abandoned, call_objective, paused, preempted
from hpo.settings import SettingsError, TrainConfig
from hpo.transport import ClientError
from hpo.trial import Control, Trial, new_trial
from workers.reference import (
    TrialHooks,
    checkpoint_file,
    conclude,
    inherit,
    keep_model,
    trial_config,
)
from workers.results import TrainStatus
from workers.runner import TrialEnd, TrialEnv, finish, new_checkpoint_folder, run_attempt
from workers.steering import HeartbeatGroup
from workers.telemetry import DeviceProbe, Telemetry

log = logging.getLogger(__name__)


@dataclass
class _Leased:
    """A leased trial waiting for, or training in, a pack."""

    trial: Trial
    config: TrainConfig
    solo: bool = False  # its checkpoint is one only the solo path can resume
    fetched: bool = True  # False: its parent's state is in the pack, its file not fetched


@dataclass
class PackRun:
    """Everything one worker's packs share."""

    env: TrialEnv
    data: Any
    device: str
    capacity: int
    lease: Callable[[int], list[TrialSpec]]  # lease up to N more trials now (may be [])
    ends: list[TrialEnd] = field(default_factory=list)
    waiting: deque[_Leased] = field(default_factory=deque)
    _members: dict[str, _Leased] = field(default_factory=dict, init=False)
    _pack: Any = field(default=None, init=False)  # the PackTrainer training now

    def run(self, specs: list[TrialSpec]) -> list[TrialEnd]:
        """Train ``specs`` (and refills) to the end; the end of every trial run."""
        self.telemetry = Telemetry(self.env.probe or DeviceProbe("cpu"))
        self.beats = HeartbeatGroup(self.env.make_client, self.telemetry.latest)
        with self.beats, self.telemetry:
            self._admit(specs)
            while self.waiting and not self.env.shutdown.is_set():
                self._train_next()
            self._give_back_waiting()
        return self.ends

    # ------------------------------------------------------------------ admitting

    def _admit(self, specs: list[TrialSpec]) -> None:
        """Check each trial's settings (bad ones fail at once) and queue the rest."""
        for spec in specs:
            control = Control(self.env.shutdown)
            trial = new_trial(self.env.client, spec, control, on_report=self.env.view.advance)
            try:
                config = trial_config(trial)
            except SettingsError as exc:
                bad = Result(
                    Ending.FAILED,
                    reason=f"bad setting {exc.field!r}: {exc}",
                    diagnosis="bad_settings",
                )
                self.ends.append(finish(self.env.client, trial, bad))
                continue
            self.beats.add(spec, control, lambda t=trial, c=config: _progress(t, c))
            self.waiting.append(self._queue(trial, config))

    def _queue(self, trial: Trial, config: TrainConfig) -> _Leased:
        """Give the trial its checkpoint folder: filled from its latest checkpoint, or left
        empty when that is the checkpoint of a parent whose state this pack holds (PBT)."""
        folder = new_checkpoint_folder(self.env.checkpoint_root, trial.spec)
        parent = self._parked(trial.spec)
        if parent is None or not _note_changes(trial, parent.config, config):
            trial.attach_checkpoints(folder)
            return _Leased(trial, config, solo=self._restore(trial, config))
        step = trial.attach_checkpoints(folder, fetch=False)
        log.info("%s continues its parent's state in this pack at step %s", trial.label, step)
        return _Leased(trial, config, fetched=False)

    def _parked(self, spec: TrialSpec) -> Any:
        """The member whose state the trial continues, when the pack holds it (else None)."""
        resume = spec.resume
        if self._pack is None or resume is None or resume.inherited_from is None:
            return None
        parked = self._pack.parking.get(resume.inherited_from)
        return None if parked is None else parked.member

    def _restore(self, trial: Trial, config: TrainConfig) -> bool:
        """After its folder was filled: True when the trial's checkpoint is not a pack
        member's this pack can continue (then it trains solo)."""
        from workers import checkpoint as ckpt

        step = trial.resume_step
        path = checkpoint_file(trial, config)
        if step is None or path is None or not path.exists():
            return False
        log.info("%s resumes from its checkpoint of step %d", trial.label, step)
        resume = trial.checkpoints.resume if trial.checkpoints else None
        if resume is not None and resume.inherited_from is not None:  # a PBT segment
            if ckpt.format_of(path) != ckpt.PACK_FORMAT:
                return True  # a solo run's: the solo path adopts it
            inherit(trial, path, config)  # re-labelled for this segment's settings
            if not path.exists():
                return False  # rejected: a fresh start
        try:
            ckpt.read(path, config, ckpt.PACK_FORMAT)
        except ckpt.CheckpointUnreadable:
            return True
        return False

    def _train_next(self) -> None:
        """The first waiting trial's group as one pack, or that trial solo."""
        from workers.packs import PackTrainer, pack_key, packable, train_pack

        first = self.waiting[0]
        if first.solo or not packable(first.config):
            self.waiting.popleft()
            self._solo(first)
            return
        key = pack_key(first.config)
        group = [m for m in self.waiting if _fits(m, key)]
        for member in group[: self.capacity]:
            self.waiting.remove(member)
        starters = self._join(group[: self.capacity])
        log.info("training a pack of %d (%s)", len(starters), _describe(key))
        self._pack = PackTrainer(self.data, self.device, capacity=self.capacity)
        try:
            train_pack(
                starters,
                self.data,
                self.device,
                capacity=self.capacity,
                pack=self._pack,
                refill=self._refill,
                on_result=self._ended,
            )
        finally:
            self._pack = None

    def _join(self, leased: list[_Leased]) -> list[Any]:
        """Members for the pack; a trial whose parent's state the pack no longer holds
        fetches its checkpoint first (one only the solo path can resume goes back to wait)."""
        members = []
        for m in leased:
            if not m.fetched and self._parked(m.trial.spec) is None:
                m.trial.fetch_checkpoint()
                m.fetched, m.solo = True, self._restore(m.trial, m.config)
                if m.solo:
                    self.waiting.append(m)
                    continue
            members.append(self._member(m))
        return members

    def _member(self, leased: _Leased) -> Any:
        from workers.packs import Member

        trial, spec = leased.trial, leased.trial.spec
        self._members[spec.lease_id] = leased
        hooks = TrialHooks(trial, leased.config.epochs)
        path = checkpoint_file(trial, leased.config)
        resume = trial.checkpoints.resume if trial.checkpoints else None
        parent = resume.inherited_from if resume is not None else None  # a PBT segment's
        # A schedule's trial pauses at a segment's end: the pack keeps its state for the
        # successor (by Optuna trial id, what a successor's inherited_from names).
        lineage = spec.trial_id if spec.pause_at is not None else None
        return Member(
            spec.lease_id, leased.config, hooks, checkpoint=path, lineage=lineage, parent=parent
        )

    def _refill(self, free: int, key: Any) -> list[Any]:
        """Continuous batching: lease more trials; those that fit the pack join it."""

        if self.env.shutdown.is_set():
            return []
        self._admit(self.lease(free))
        # Successors whose parents' state the pack holds first: it is kept until the next epoch.
        joining = sorted((m for m in self.waiting if _fits(m, key)), key=lambda m: m.fetched)
        for leased in joining[:free]:
            self.waiting.remove(leased)
        return self._join(joining[:free])

    # ------------------------------------------------------------------ ending

    def _ended(self, member: Any, result: Any) -> None:
        """A member left the pack: judge its run and send its one final call."""
        leased = self._members.pop(member.id)
        trial = leased.trial
        self.beats.remove(trial.spec.lease_id)
        if result.status == TrainStatus.COMPLETED:
            keep_model(trial, leased.config, result)
        outcome = call_objective(trial, lambda t: conclude(t, result))
        if self.env.shutdown.is_set() and outcome.ending in (Ending.DROPPED, Ending.PRUNED):
            outcome = preempted(trial)  # SIGTERM: its last epoch's checkpoint, handed back
        elif trial.control.pause.is_set() and outcome.ending in (Ending.DROPPED, Ending.PRUNED):
            outcome = paused(trial)  # the schedule's pause: checkpoint, handed back
        elif trial.control.drop.is_set():
            outcome = Result(Ending.DROPPED, reason=trial.control.drop_reason)
        trial.telemetry = self.telemetry.summary()  # the device, shared by the pack so far
        self.ends.append(finish(self.env.client, trial, outcome))
        _remove_folder(trial)

    def _solo(self, leased: _Leased) -> None:
        self.beats.remove(leased.trial.spec.lease_id)
        try:
            self.ends.append(run_attempt(self.env, leased.trial, leased.trial.control))
        finally:
            _remove_folder(leased.trial)

    def _give_back_waiting(self) -> None:
        """Shutting down: every trial still waiting goes back to the queue at once."""
        while self.waiting:
            leased = self.waiting.popleft()
            self.beats.remove(leased.trial.spec.lease_id)
            self.ends.append(finish(self.env.client, leased.trial, abandoned(preempted=True)))
            _remove_folder(leased.trial)


def _fits(leased: _Leased, key: Any) -> bool:
    from workers.packs import pack_key, packable

    return not leased.solo and packable(leased.config) and pack_key(leased.config) == key


def _note_changes(trial: Trial, parent: TrainConfig, config: TrainConfig) -> bool:
    """The settings a PBT segment changes from its parent's, as a user attr (as
    workers.reference.inherit does from the file); False when it may not continue it."""
    from workers import checkpoint as ckpt
    from workers.inherit import changes

    try:
        changed = changes(ckpt.fingerprint(parent), config, trial.label)
    except ckpt.CheckpointUnreadable as exc:
        log.warning("%s cannot continue its parent's state: %s", trial.label, exc)
        return False
    trial.set_user_attr("inherited_changes", {k: list(v) for k, v in changed.items()})
    return True


def _remove_folder(trial: Trial) -> None:
    if trial.checkpoint_dir is not None:
        shutil.rmtree(trial.checkpoint_dir, ignore_errors=True)


def _progress(trial: Trial, config: TrainConfig) -> float | None:
    if trial.last_step is None:
        return None
    return min(1.0, trial.last_step / max(config.epochs, 1))


def _describe(key: Any) -> str:
    return ", ".join(f"{name}={value}" for name, value in key._asdict().items())


#: ``--pack auto`` on a CPU: measured throughput stops growing well before memory runs out.
CPU_AUTO_LIMIT = 16


def pack_size(pack: int | str | None, spec: TrialSpec, data: Any, device: str) -> int:
    """K for ``--pack K``, or for ``--pack auto`` the largest pack of ``spec``'s shape that
    fits the device (its memory per member measured), capped on a CPU."""
    if isinstance(pack, int):
        return pack
    from workers.packs import auto_pack_size

    try:
        config = TrainConfig.from_settings(spec.settings, spec.seed)
    except SettingsError:
        return 1  # the trial will fail on its own; nothing to size a pack by
    limit = 64 if device.startswith("cuda") else CPU_AUTO_LIMIT
    k = auto_pack_size(config, data, device, limit=limit)
    log.info("--pack auto: %d trials per pack on %s", k, device)
    return k


def lease_more(
    client: Client, worker_id: str, studies: list[str] | None
) -> Callable[[int], list[TrialSpec]]:
    """A refill function: lease up to N trials now, without waiting (``[]`` when none)."""

    def lease(count: int) -> list[TrialSpec]:
        body = LeaseRequest(worker_id=worker_id, studies=studies, max_trials=max(1, min(count, 64)))
        try:
            return client.lease(body).trials
        except ClientError as exc:
            log.warning("refill lease failed: %s", exc)
            return []

    return lease
