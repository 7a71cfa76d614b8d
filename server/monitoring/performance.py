"""What the predictions earned: hit rates by model agreement, the Kelly-sized equity curve with its
drawdown beside buy-and-hold, and the distribution of Kelly stakes. Pure functions over numpy
arrays of resolved predictions in bar-time order."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from server.core import signal_report

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

#: Agreement (1 - |p_lstm - p_ensemble|) at or above which a prediction is "high agreement".
HIGH_AGREEMENT = 0.8


@dataclass(frozen=True)
class HitRate:
    name: str
    min_agreement: float
    max_agreement: float
    resolved: int
    hits: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.resolved if self.resolved else math.nan


@dataclass(frozen=True)
class Equity:
    """Growth of 1 unit of capital after each outcome, and the drawdowns below the running high."""

    kelly: FloatArray
    buy_and_hold: FloatArray
    kelly_drawdown: FloatArray
    buy_and_hold_drawdown: FloatArray

    @property
    def kelly_return(self) -> float:
        return float(self.kelly[-1] - 1.0) if self.kelly.size else 0.0

    @property
    def buy_and_hold_return(self) -> float:
        return float(self.buy_and_hold[-1] - 1.0) if self.buy_and_hold.size else 0.0

    @property
    def kelly_max_drawdown(self) -> float:
        return float(self.kelly_drawdown.min()) if self.kelly_drawdown.size else 0.0

    @property
    def buy_and_hold_max_drawdown(self) -> float:
        return float(self.buy_and_hold_drawdown.min()) if self.buy_and_hold_drawdown.size else 0.0


@dataclass(frozen=True)
class StakeHistogram:
    #: Bin edges from 0 to the cap; bin i holds stakes in (edges[i], edges[i + 1]].
    edges: FloatArray
    counts: IntArray
    predictions: int
    sized: int
    capped: int
    mean_stake: float

    @property
    def sized_share(self) -> float:
        return self.sized / self.predictions if self.predictions else math.nan

    @property
    def capped_share(self) -> float:
        return self.capped / self.predictions if self.predictions else math.nan


def agreement_hit_rates(
    agreement: FloatArray, hit: BoolArray, threshold: float = HIGH_AGREEMENT
) -> tuple[HitRate, HitRate]:
    """Hit rates of the resolved predictions at or above ``threshold`` agreement and below it."""
    a = np.asarray(agreement, dtype=np.float64)
    h = np.asarray(hit, dtype=bool)
    high = a >= threshold
    return (
        HitRate("high agreement", threshold, 1.0, int(high.sum()), int(h[high].sum())),
        HitRate("rest", 0.0, threshold, int((~high).sum()), int(h[~high].sum())),
    )


def equity_curves(position_return: FloatArray, realized_return: FloatArray) -> Equity:
    """Compounded Kelly-sized returns against holding the symbol over the same bars (the signal
    report's curves, without their starting point)."""
    kelly = signal_report.equity_curve(position_return)[1:]
    held = signal_report.equity_curve(realized_return)[1:]
    return Equity(
        kelly, held, signal_report.drawdown_curve(kelly), signal_report.drawdown_curve(held)
    )


def sample_indices(n: int, points: int) -> IntArray:
    """At most ``points`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= 0 or points <= 0:
        return np.empty(0, dtype=np.int64)
    if n <= points:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0, n - 1, points)).astype(np.int64))


def stake_histogram(stakes: FloatArray, cap: float, bins: int) -> StakeHistogram:
    """Counts of the stakes above zero in ``bins`` equal bins over (0, cap]; a stake within 1e-12
    of the cap counts as capped."""
    s = np.asarray(stakes, dtype=np.float64)
    sized = s[s > 0]
    edges = np.linspace(0.0, cap, max(bins, 1) + 1)
    # Bin i holds (edges[i], edges[i + 1]]: searchsorted on the left edge of each stake.
    index = np.clip(np.searchsorted(edges, sized, side="left") - 1, 0, edges.size - 2)
    counts = np.bincount(index, minlength=edges.size - 1).astype(np.int64)
    return StakeHistogram(
        edges=edges,
        counts=counts,
        predictions=int(s.size),
        sized=int(sized.size),
        capped=int((s >= cap - 1e-12).sum()),
        mean_stake=float(sized.mean()) if sized.size else math.nan,
    )
