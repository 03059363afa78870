"""Compression settings of one trial: a validated, immutable :class:`CompressionSettings`.

Torch-free on purpose: a bad value must fail in milliseconds with the field
named, before any tensor is touched. The names, types and ranges are the
reference trainer's settings schema (:mod:`hpo.settings`), validated there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hpo.settings import (
    COMPRESSION,
    IN_FEATURES,
    PruneSchedule,
    Quantize,
    SettingsError,
    check_setting,
)

FIELDS = COMPRESSION
PruneScheduleName = PruneSchedule
QuantizeMode = Quantize


class CompressionSettingsError(ValueError):
    """A compression setting has a bad value; ``field`` names it (and so does the message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CompressionSettings:
    """What to do to a trained model before it ships. The defaults do nothing.

    prune_amount: fraction of the Linear weights set to zero by global magnitude
        pruning, 0 .. 0.95.
    prune_schedule: ``once`` (after training) or ``gradual`` (a cubic ramp over
        the training epochs, see :class:`~workers.compression.PruneSchedule`).
    low_rank: rank of the truncated-SVD factorization of each hidden layer's
        weights, an int >= 1 or None (no factorization). Its upper bound depends
        on the model's width: :meth:`check_width`.
    quantize: none | int8 (dynamic quantization of the Linear layers) | fp16 | bf16.
    finetune_epochs: training epochs after pruning or factorization, 0 .. 100.
    """

    prune_amount: float = 0.0
    prune_schedule: PruneScheduleName = "once"
    low_rank: int | None = None
    quantize: QuantizeMode = "none"
    finetune_epochs: int = 0

    def __post_init__(self) -> None:
        # Checked here, so no invalid instance can exist, however it was built; the names,
        # types and ranges are the settings schema's (hpo.settings), defined once there.
        for name in FIELDS:
            try:
                value = check_setting(name, getattr(self, name))
            except SettingsError as exc:
                raise CompressionSettingsError(exc.field, str(exc)) from None
            object.__setattr__(self, name, value)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CompressionSettings:
        """The compression fields of a trial's settings dict; other keys are not ours."""
        return cls(**{name: settings[name] for name in FIELDS if name in settings})

    def check_width(self, hidden: int, in_features: int = IN_FEATURES) -> None:
        """Raise if ``low_rank`` exceeds what the hidden layers of this width allow.

        Every hidden layer is factorized (input -> hidden and hidden -> hidden), so
        the rank is bounded by the smallest dimension among them.
        """
        limit = min(hidden, in_features)
        if self.low_rank is not None and self.low_rank > limit:
            raise CompressionSettingsError(
                "low_rank",
                f"low_rank must be <= {limit} (the hidden layer width {hidden}), "
                f"got {self.low_rank}",
            )

    @property
    def changes_weights(self) -> bool:
        """True when pruning or factorization changes the weights (fine-tuning then helps)."""
        return self.prune_amount > 0 or self.low_rank is not None

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)
