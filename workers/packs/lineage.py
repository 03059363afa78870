"""PBT inside a pack: exploit as a copy between member slots, explore as new hyperparameters.

Each PBT segment is its own trial, so a member that reaches its segment's end
leaves the pack (its hooks pause it) and its successor joins as a new member.
When the successor's ``parent`` (the run whose state it continues: its own last
segment, or a better member's under exploit) left this pack at the last epoch
boundary, the pack does not read the parent's checkpoint file: the parent's rows
stay where they were (the stack it left is not stepped again) and the successor's
slot of the next stack is filled from them, parameters, batch-norm statistics and
optimizer state (momentum buffers, Adam moments, step counts) in the one gather
that builds the stack. Explore needs nothing more: a member's hyperparameters
(lr, weight decay, momentum, betas, eps, L1, dropout) are per-member tensors the
pack sets from each member's settings every epoch (workers.packs.optim.Group).

Parked parents live until the next epoch starts (successors leased by then join
from them); after that a successor continues from its checkpoint file instead,
which gives the same run (tests/workers/test_pack_pbt.py).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

from workers.packs.member import Member
from workers.packs.stack import Rows

log = logging.getLogger(__name__)


@dataclass
class Parked:
    """A member that left at an epoch end, with its rows in the stack it left."""

    member: Member
    rows: Rows
    elapsed_s: float


class Parking:
    """The runs a pack can still hand over to successors, by ``Member.lineage``."""

    def __init__(self) -> None:
        self._parked: dict[Hashable, Parked] = {}

    def __bool__(self) -> bool:
        return bool(self._parked)

    def __contains__(self, lineage: object) -> bool:
        return lineage in self._parked

    def get(self, lineage: Hashable) -> Parked | None:
        return self._parked.get(lineage)

    def park(self, member: Member, rows: Rows) -> None:
        """Keep ``member``'s state (``rows``: views of a stack no longer stepped)."""
        if member.lineage is not None:
            self._parked[member.lineage] = Parked(member, rows, member.elapsed_s())

    def hand_over(self, member: Member) -> bool:
        """When the pack holds ``member``'s parent: continue it (True); else False."""
        parked = self._parked.get(member.parent) if member.parent is not None else None
        if parked is None:
            return False
        member.adopt(parked.member, parked.rows, parked.elapsed_s)
        log.info(
            "%r continues run %r inside the pack at epoch %d (state copied between slots)",
            member.id,
            member.parent,
            member.epoch,
        )
        return True

    def clear(self) -> None:
        """The next epoch starts: the stacks parked members left are freed."""
        self._parked.clear()
