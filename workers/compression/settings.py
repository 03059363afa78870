"""Compression settings of one trial: a validated, immutable :class:`CompressionSettings`.

Torch-free on purpose: the settings schema (pydantic, in the contract package)
mirrors these names and ranges, and a bad value must fail in milliseconds with
the field named, before any tensor is touched. The names are part of the study
spec API: keep them stable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

MAX_PRUNE_AMOUNT = 0.95  # pruning everything leaves no model; 95 % is the cap
MAX_FINETUNE_EPOCHS = 100
PRUNE_SCHEDULES = ("once", "gradual")
QUANTIZE_MODES = ("none", "int8", "fp16", "bf16")
FIELDS = ("prune_amount", "prune_schedule", "low_rank", "quantize", "finetune_epochs")

PruneScheduleName = Literal["once", "gradual"]
QuantizeMode = Literal["none", "int8", "fp16", "bf16"]


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
        # Checked here, so no invalid instance can exist, however it was built.
        amount = _number("prune_amount", self.prune_amount, float)
        if not 0.0 <= amount <= MAX_PRUNE_AMOUNT:
            raise CompressionSettingsError(
                "prune_amount", f"prune_amount must be in 0 .. {MAX_PRUNE_AMOUNT}, got {amount!r}"
            )
        object.__setattr__(self, "prune_amount", amount)
        _choice("prune_schedule", self.prune_schedule, PRUNE_SCHEDULES)
        _choice("quantize", self.quantize, QUANTIZE_MODES)
        if self.low_rank is not None:
            rank = _number("low_rank", self.low_rank, int)
            if rank < 1:
                raise CompressionSettingsError("low_rank", f"low_rank must be >= 1, got {rank}")
            object.__setattr__(self, "low_rank", rank)
        epochs = _number("finetune_epochs", self.finetune_epochs, int)
        if not 0 <= epochs <= MAX_FINETUNE_EPOCHS:
            raise CompressionSettingsError(
                "finetune_epochs",
                f"finetune_epochs must be in 0 .. {MAX_FINETUNE_EPOCHS}, got {epochs}",
            )
        object.__setattr__(self, "finetune_epochs", epochs)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CompressionSettings:
        """The compression fields of a trial's settings dict; other keys are not ours."""
        return cls(**{name: settings[name] for name in FIELDS if name in settings})

    def check_width(self, hidden: int, in_features: int = 28 * 28) -> None:
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


def _number(name: str, value: Any, kind: type) -> Any:
    # bool is an int in Python: True must not silently become finetune_epochs=1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CompressionSettingsError(name, f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise CompressionSettingsError(name, f"{name} must be finite, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise CompressionSettingsError(name, f"{name} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise CompressionSettingsError(
            name, f"{name} must be one of {', '.join(options)}; got {value!r}"
        )
