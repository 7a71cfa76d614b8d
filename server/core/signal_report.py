"""The figures a trading signal is judged by, out of sample: information coefficient and the
returns of trading it, beside simple baselines.

Conventions, the same everywhere (training, the replay summary, the retraining gate, the dashboard):

- ``signal[t]`` and ``position[t]`` are decided at the close of bar ``t``; ``next_return[t]`` is the
  simple return from that close to the next one. A position held over bar ``t`` earns
  ``position[t] * next_return[t]``: nothing here shifts anything, so a caller that passes a signal
  built from the return it is scored on gets absurd figures, and :func:`ic_decay` shows it.
- Returns compound; annualised figures assume ``periods_per_year`` bars a year (252 trading days).
- Sharpe ratio: mean over standard deviation of the per-bar returns, times the square root of
  ``periods_per_year``, with no risk-free rate; 0 for a strategy that never moves.
- Hit rate: of the bars with a non-zero position, the share where its direction was right, by the
  one hit rule of :mod:`server.core.scoring` (a flat bar is a hit for a short).

Plain functions over numpy arrays returning frozen dataclasses; numpy only (the serving process
imports the core).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from server.core.config import KellyConfig
from server.core.kelly import kelly_fraction
from server.core.scoring import hits

FloatArray = npt.NDArray[np.float64]
PERIODS_PER_YEAR = 252


def _vector(a: ArrayLike, name: str) -> FloatArray:
    out = np.asarray(a, dtype=np.float64).ravel()
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} has non-finite values")
    return out


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
    a, b = _vector(x, "signal"), _vector(y, "next_return")
    if a.shape != b.shape:
        raise ValueError(f"signal and next_return differ in length: {a.size} and {b.size}")
    return a, b


# -- information coefficient ---------------------------------------------------------------------


def average_ranks(x: ArrayLike) -> FloatArray:
    """Ranks 1..n, ties sharing the mean of their ranks (what Spearman's correlation needs)."""
    values = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Runs of equal values: each gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson's correlation; NaN when fewer than 3 pairs or either side is constant."""
    a, b = _pair(x, y)
    if a.size < 3:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denominator == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(da, db)) / denominator))


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (Pearson's on average ranks)."""
    a, b = _pair(x, y)
    return pearson(average_ranks(a), average_ranks(b))


def correlation_t(r: float, n: int) -> float:
    """t-statistic of a correlation r over n pairs, r * sqrt((n - 2) / (1 - r^2)): the test of
    "no correlation" with n - 2 degrees of freedom."""
    if not math.isfinite(r) or n < 3:
        return math.nan
    if abs(r) >= 1.0:
        return math.copysign(math.inf, r)
    return r * math.sqrt((n - 2) / (1.0 - r * r))


def correlation_se(r: float, n: int) -> float:
    """One standard error of a correlation, sqrt((1 - r^2) / (n - 2)) (so that r / se = t)."""
    if not math.isfinite(r) or n < 3:
        return math.nan
    return math.sqrt(max(1.0 - r * r, 0.0) / (n - 2))


@dataclass(frozen=True)
class InformationCoefficient:
    """Correlation of a signal with the return that follows it."""

    pearson: float
    pearson_t: float
    spearman: float
    spearman_t: float
    n: int

    @property
    def spearman_se(self) -> float:
        return correlation_se(self.spearman, self.n)

    @property
    def pearson_se(self) -> float:
        return correlation_se(self.pearson, self.n)


def information_coefficient(signal: ArrayLike, next_return: ArrayLike) -> InformationCoefficient:
    """IC of ``signal[t]`` (e.g. fused P(up) - 0.5) with ``next_return[t]``, with t-statistics."""
    a, b = _pair(signal, next_return)
    r_p, r_s = pearson(a, b), spearman(a, b)
    return InformationCoefficient(
        pearson=r_p,
        pearson_t=correlation_t(r_p, a.size),
        spearman=r_s,
        spearman_t=correlation_t(r_s, a.size),
        n=int(a.size),
    )


@dataclass(frozen=True)
class YearIC:
    year: int
    spearman: float
    pearson: float
    n: int

    @property
    def spearman_t(self) -> float:
        return correlation_t(self.spearman, self.n)


def ic_by_year(
    signal: ArrayLike, next_return: ArrayLike, times: npt.NDArray[np.datetime64]
) -> tuple[YearIC, ...]:
    """IC per calendar year of the decision times ``times`` (one per signal)."""
    a, b = _pair(signal, next_return)
    stamps = np.asarray(times).astype("datetime64[Y]")
    if stamps.size != a.size:
        raise ValueError("need one time per signal")
    years = stamps.astype(np.int64) + 1970
    out = []
    for year in np.unique(years).tolist():
        mask = years == year
        out.append(
            YearIC(
                int(year), spearman(a[mask], b[mask]), pearson(a[mask], b[mask]), int(mask.sum())
            )
        )
    return tuple(out)


def ic_decay(signal: ArrayLike, next_return: ArrayLike, max_delay: int = 3) -> tuple[float, ...]:
    """Spearman IC of the signal acted on ``d`` bars late (``signal[t - d]`` against
    ``next_return[t]``), for d = 0 .. max_delay. A forecast of daily returns keeps a small IC for
    a bar or so; one that looked at the return it is scored on has a large IC at d = 0 and none at
    d = 1, which is how a look-ahead leak shows."""
    a, b = _pair(signal, next_return)
    return tuple(
        spearman(a[: a.size - d], b[d:]) if a.size - d >= 3 else math.nan
        for d in range(max_delay + 1)
    )


def lookahead_suspected(
    signal: ArrayLike, next_return: ArrayLike, max_plausible_t: float = 5.0
) -> bool:
    """True when the signal's IC is implausibly strong for next-bar returns (|t| above
    ``max_plausible_t``) and mostly gone once the signal is acted on one bar late: the signature of
    a signal that saw the return it is scored on."""
    now, late = ic_decay(signal, next_return, 1)
    n = int(np.size(signal))
    t_now = correlation_t(now, n)
    if not abs(t_now) > max_plausible_t:  # NaN: no evidence; inf: a perfect correlation
        return False
    return not (math.isfinite(late) and abs(late) > 0.25 * abs(now))


# -- strategy returns ----------------------------------------------------------------------------


def strategy_returns(positions: ArrayLike, next_return: ArrayLike) -> FloatArray:
    """Per-bar return of holding ``positions[t]`` (signed fraction of capital) over bar ``t``."""
    w, r = _pair(positions, next_return)
    out: FloatArray = w * r
    return out


def equity_curve(returns: ArrayLike) -> FloatArray:
    """Compounded value of 1 unit of capital: length n + 1, starting at 1 (before the first bar)."""
    r = _vector(returns, "returns")
    out: FloatArray = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    return out


def drawdown_curve(equity: ArrayLike) -> FloatArray:
    """Fraction below the running peak at each point of an equity curve (<= 0; 0 at a new high).
    For the dashboard's equity panel: plot it under :func:`equity_curve`."""
    e = _vector(equity, "equity")
    peak = np.maximum.accumulate(e)
    out: FloatArray = np.divide(e, peak, out=np.ones_like(e), where=peak > 0) - 1.0
    return out


@dataclass(frozen=True)
class Drawdown:
    """The deepest fall of an equity curve from a running peak. Indices are equity points
    (0 = the starting capital, k = after the k-th bar's return)."""

    depth: float
    peak: int
    trough: int
    #: First point back at the peak's value after the trough; -1 if it never got back.
    recovery: int


def max_drawdown(equity: ArrayLike) -> Drawdown:
    e = _vector(equity, "equity")
    if e.size == 0:
        return Drawdown(0.0, 0, 0, 0)
    curve = drawdown_curve(e)
    trough = int(np.argmin(curve))
    depth = float(-curve[trough])
    if depth <= 0.0:
        return Drawdown(0.0, 0, 0, 0)
    peak = int(np.argmax(e[: trough + 1]))
    back = np.flatnonzero(e[trough:] >= e[peak])
    recovery = trough + int(back[0]) if back.size else -1
    return Drawdown(depth, peak, trough, recovery)


def sharpe_se(sharpe_per_bar: float, n: int, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """One standard error of the annualised Sharpe ratio for independent returns (Lo, 2002):
    sqrt((1 + SR^2 / 2) / n) per bar, times sqrt(periods_per_year)."""
    if n < 2 or not math.isfinite(sharpe_per_bar):
        return math.nan
    return math.sqrt((1.0 + 0.5 * sharpe_per_bar**2) / n) * math.sqrt(periods_per_year)


@dataclass(frozen=True)
class StrategyReport:
    """What trading a sequence of positions earned over a span."""

    n: int
    total_return: float
    annualized_return: float
    annualized_volatility: float
    sharpe: float
    sharpe_se: float
    max_drawdown: float
    #: Dates of the drawdown's peak, trough and recovery ("start": the starting capital; all ""
    #: without a drawdown, recovery "" if the curve never got back), from the ``times`` given
    #: (else equity-point indices).
    drawdown_peak: str
    drawdown_trough: str
    drawdown_recovery: str
    #: Bars with a non-zero position, and the share of them whose direction was right.
    active_bars: int
    hit_rate: float
    #: Share of bars in the market (non-zero position).
    exposure: float
    #: Mean |position| over all bars (average fraction of capital committed).
    mean_abs_position: float
    #: Capital traded a year: the sum of |position change| (entering from flat counts), annualised.
    turnover: float

    @property
    def hit_rate_se(self) -> float:
        h, n = self.hit_rate, self.active_bars
        return math.sqrt(h * (1.0 - h) / n) if n and math.isfinite(h) else math.nan

    def as_dict(self) -> dict[str, float | str]:
        return {**asdict(self), "hit_rate_se": self.hit_rate_se}


def _label(index: int, times: npt.NDArray[np.datetime64] | None) -> str:
    if index == 0:
        return "start"
    if times is None:
        return str(index)
    return str(times[index - 1])[:10]


def _report(
    returns: FloatArray,
    w: FloatArray,
    r: FloatArray,
    turnover: float,
    times: npt.NDArray[np.datetime64] | None,
    periods_per_year: int,
) -> StrategyReport:
    """Figures of per-bar strategy ``returns``; hit rate, exposure and mean stake over the
    (position ``w``, next return ``r``) pairs behind them."""
    n = int(returns.size)
    if n == 0:
        raise ValueError("need at least one bar")
    equity = equity_curve(returns)
    final = float(equity[-1])
    annualized = final ** (periods_per_year / n) - 1.0 if final > 0 else -1.0
    std = float(np.std(returns, ddof=1)) if n > 1 else 0.0
    # An exactly flat strategy (std 0) has Sharpe 0 by convention, not 0/0.
    per_bar = float(np.mean(returns)) / std if std > 0 else 0.0
    drawdown = max_drawdown(equity)
    active = w != 0
    n_active = int(active.sum())
    hit = hits(w[active] > 0, r[active]) if n_active else np.empty(0, dtype=bool)
    recovery = "" if drawdown.recovery < 0 else _label(drawdown.recovery, times)
    return StrategyReport(
        n=n,
        total_return=final - 1.0,
        annualized_return=annualized,
        annualized_volatility=std * math.sqrt(periods_per_year),
        sharpe=per_bar * math.sqrt(periods_per_year),
        sharpe_se=sharpe_se(per_bar, n, periods_per_year),
        max_drawdown=drawdown.depth,
        drawdown_peak=_label(drawdown.peak, times) if drawdown.depth > 0 else "",
        drawdown_trough=_label(drawdown.trough, times) if drawdown.depth > 0 else "",
        drawdown_recovery=recovery if drawdown.depth > 0 else "",
        active_bars=n_active,
        hit_rate=float(np.mean(hit)) if n_active else math.nan,
        exposure=n_active / w.size,
        mean_abs_position=float(np.mean(np.abs(w))),
        turnover=turnover,
    )


def _turnover(w: FloatArray, periods_per_year: int) -> float:
    """Sum of |position change| per bar (entering from flat counts), annualised."""
    changes = np.abs(np.diff(np.concatenate(([0.0], w))))
    return float(np.sum(changes)) / w.size * periods_per_year if w.size else 0.0


def strategy_report(
    positions: ArrayLike,
    next_return: ArrayLike,
    *,
    times: npt.NDArray[np.datetime64] | None = None,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> StrategyReport:
    """The figures of holding ``positions[t]`` over bar ``t``. ``times``, if given, are when each
    return is realized (the close it runs to), used to date the drawdown."""
    w, r = _pair(positions, next_return)
    if times is not None and np.size(times) != w.size:
        raise ValueError("need one time per position")
    return _report(w * r, w, r, _turnover(w, periods_per_year), times, periods_per_year)


def portfolio_returns(
    returns: Sequence[ArrayLike], times: Sequence[npt.NDArray[np.datetime64]]
) -> tuple[npt.NDArray[np.datetime64], FloatArray]:
    """Equal-weight portfolio of several strategies: on each time any of them trades, the mean
    return of those trading then (capital split evenly among the series open that day)."""
    if len(returns) != len(times) or not returns:
        raise ValueError("need one time array per return array, and at least one")
    flat_r = np.concatenate([_vector(r, "returns") for r in returns])
    flat_t = np.concatenate([np.asarray(t).astype("datetime64[s]") for t in times])
    if flat_r.size != flat_t.size:
        raise ValueError("need one time per return")
    unique, inverse = np.unique(flat_t, return_inverse=True)
    total = np.bincount(inverse, weights=flat_r, minlength=unique.size)
    count = np.bincount(inverse, minlength=unique.size)
    out: FloatArray = total / count
    return unique, out


def portfolio_report(
    positions: Sequence[ArrayLike],
    next_returns: Sequence[ArrayLike],
    times: Sequence[npt.NDArray[np.datetime64]],
    *,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> StrategyReport:
    """One strategy run on several series at once, as an equal-weight portfolio (see
    :func:`portfolio_returns`; ``times`` are when each return is realized): return, volatility,
    Sharpe and drawdown of the portfolio; hit rate, exposure and mean stake over every
    (series, bar); turnover the mean of the series' turnovers."""
    if not (len(positions) == len(next_returns) == len(times)) or not positions:
        raise ValueError("need positions, returns and times for each series, and one series")
    pairs = [_pair(w, r) for w, r in zip(positions, next_returns, strict=True)]
    when, returns = portfolio_returns([w * r for w, r in pairs], times)
    w_all = np.concatenate([w for w, _ in pairs])
    r_all = np.concatenate([r for _, r in pairs])
    turnover = float(np.mean([_turnover(w, periods_per_year) for w, _ in pairs]))
    return _report(returns, w_all, r_all, turnover, when, periods_per_year)


# -- positions of the strategies compared --------------------------------------------------------


def kelly_positions(
    p_up: ArrayLike,
    payoff_ratio: float,
    config: KellyConfig,
    direction: ArrayLike | None = None,
) -> FloatArray:
    """Signed fractional-Kelly stakes of a P(up) forecast: on the predicted direction (``direction``
    +1/-1, else up when p >= 0.5), with win probability p or 1 - p, capped as configured. With the
    fused direction and the calibrated p, this is what the server sizes."""
    p = _vector(p_up, "p_up")
    sign = (
        np.where(p >= 0.5, 1.0, -1.0)
        if direction is None
        else np.sign(_vector(direction, "direction"))
    )
    p_win = np.where(sign > 0, p, 1.0 - p)
    out: FloatArray = sign * kelly_fraction(p_win, payoff_ratio, config)
    return out


def constant_kelly_long(
    n: int, up_rate: float, payoff_ratio: float, config: KellyConfig
) -> FloatArray:
    """A constant long sized by fractional Kelly on a base rate (e.g. the training span's up-rate
    and the payoff of always being long there): the "no model" strategy a signal must beat."""
    stake = float(kelly_fraction(np.array([up_rate]), payoff_ratio, config)[0])
    return np.full(n, stake)


def buy_and_hold(n: int) -> FloatArray:
    return np.ones(n)


# -- one signal, all figures ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignalReport:
    """IC of a probability forecast and the report of trading it with Kelly stakes."""

    name: str
    ic: InformationCoefficient
    #: Spearman IC when acted on one bar late (see :func:`ic_decay`).
    ic_late: float
    strategy: StrategyReport

    def figures(self) -> dict[str, float]:
        """The numeric figures flat, e.g. for a metrics row or a manifest."""
        s = self.strategy
        return {
            "ic_spearman": self.ic.spearman,
            "ic_spearman_t": self.ic.spearman_t,
            "ic_pearson": self.ic.pearson,
            "ic_pearson_t": self.ic.pearson_t,
            "ic_late": self.ic_late,
            "total_return": s.total_return,
            "annualized_return": s.annualized_return,
            "annualized_volatility": s.annualized_volatility,
            "sharpe": s.sharpe,
            "sharpe_se": s.sharpe_se,
            "max_drawdown": s.max_drawdown,
            "hit_rate": s.hit_rate,
            "exposure": s.exposure,
            "turnover": s.turnover,
        }


def signal_report(
    name: str,
    p_up: ArrayLike,
    next_return: ArrayLike,
    positions: ArrayLike,
    *,
    times: npt.NDArray[np.datetime64] | None = None,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> SignalReport:
    """IC of ``p_up - 0.5`` with the next return, and the report of holding ``positions``."""
    p, r = _pair(p_up, next_return)
    signal = p - 0.5
    decay = ic_decay(signal, r, 1)
    return SignalReport(
        name=name,
        ic=information_coefficient(signal, r),
        ic_late=decay[1],
        strategy=strategy_report(positions, r, times=times, periods_per_year=periods_per_year),
    )
