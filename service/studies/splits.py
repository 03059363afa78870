"""Statistics behind the study diagnosis: where to cut a parameter's range.

``best_split(points, side)`` finds the threshold on one parameter whose far side
is mostly bad trials and near side mostly good ones, with minimum counts and a
one-sided Fisher exact test so that a few unlucky trials make no pattern;
``readable_between`` turns the cut into the shortest decimal between the two
sides. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal, NamedTuple

# --------------------------------------------------------------------------- thresholds

# A region (the trials an edit would exclude) needs at least this many bad
# trials: a few unlucky trials are an anecdote, not a pattern (with 4, pure
# noise in 300-trial studies made a proposal in 2 of 800 simulated studies).
MIN_REGION_BAD = 5
# ...and at least this share of its trials bad: the edit must mostly cut bad ones.
MIN_REGION_RATE = 0.75
# The side that is kept needs this many trials...
MIN_KEPT = 4
# ...with at most this share bad: there has to be a good region to narrow to.
MAX_KEPT_RATE = 0.25
# One-sided Fisher exact test of "bad is more likely in the region": picking
# the best of many thresholds finds something in pure noise at p ~ 0.05.
MAX_P_VALUE = 0.01

# --------------------------------------------------------------------------- statistics


def fisher_greater(bad_in: int, n_in: int, bad_all: int, n_all: int) -> float:
    """One-sided Fisher exact p: chance of >= ``bad_in`` bad among ``n_in`` drawn at random."""

    def log_comb(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    total = log_comb(n_all, n_in)
    p = 0.0
    for x in range(bad_in, min(n_in, bad_all) + 1):
        if n_in - x <= n_all - bad_all:
            p += math.exp(log_comb(bad_all, x) + log_comb(n_all - bad_all, n_in - x) - total)
    return min(p, 1.0)


def readable_between(low: float, high: float, side: Literal["above", "below"]) -> float:
    """The shortest decimal separating two sides of a split.

    ``above``: the shortest number r with low <= r < high (``low`` rounded up);
    ``below``: the shortest r with low < r <= high (``high`` rounded down).
    Significant digits follow the magnitude, so log ranges round sensibly too.
    """
    x, rounding = (low, ROUND_CEILING) if side == "above" else (high, ROUND_FLOOR)
    if x == 0:
        return 0.0
    exponent = math.floor(math.log10(abs(x)))
    for digits in range(1, 16):
        quantum = Decimal(10) ** (exponent - digits + 1)
        r = float((Decimal(repr(x)) / quantum).to_integral_value(rounding) * quantum)
        if (side == "above" and r < high) or (side == "below" and r > low):
            return r
    return x


# --------------------------------------------------------------------------- numeric splits


class Split(NamedTuple):
    """A cut of one parameter: the region beyond ``threshold`` on ``side`` is mostly bad."""

    side: Literal["above", "below"]
    threshold: float  # readable value between the two sides
    bad: int
    total: int
    kept_bad: int
    kept_total: int
    p_value: float


def best_split(
    points: Sequence[tuple[float, bool]], side: Literal["above", "below"]
) -> Split | None:
    """The threshold whose far side (``side``) is mostly bad and near side mostly good.

    ``points`` are (value, bad). Among admissible cuts (the module's minimum counts
    and rates) the one cutting the most bad minus good trials wins, the smaller
    region on a tie; None if none is admissible or its Fisher p exceeds MAX_P_VALUE.
    """
    ordered = sorted(points, key=lambda p: p[0], reverse=side == "below")
    n, bad_all = len(ordered), sum(b for _, b in ordered)
    kept_bad, best = 0, None
    for i in range(1, n):  # kept = ordered[:i], region = ordered[i:]
        kept_bad += ordered[i - 1][1]
        bad, total = bad_all - kept_bad, n - i
        if ordered[i - 1][0] == ordered[i][0] or not _admissible(bad, total, kept_bad, i):
            continue
        if best is None or (2 * bad - total, -total) > best[0]:
            best = ((2 * bad - total, -total), i, bad, kept_bad)
    if best is None:
        return None
    _, i, bad, kept_bad = best
    p = fisher_greater(bad, n - i, bad_all, n)
    lo, hi = sorted((ordered[i - 1][0], ordered[i][0]))
    r = readable_between(lo, hi, side)
    return Split(side, r, bad, n - i, kept_bad, i, p) if p <= MAX_P_VALUE else None


def _admissible(bad: int, total: int, kept_bad: int, kept_total: int) -> bool:
    return (
        bad >= MIN_REGION_BAD
        and bad >= MIN_REGION_RATE * total
        and kept_total >= MIN_KEPT
        and kept_bad <= MAX_KEPT_RATE * kept_total
    )
