"""Out-of-sample scores of probability forecasts beside naive baselines, and the figures a signal is
traded on (information coefficient, the Kelly-sized strategy beside buy-and-hold and a constant
Kelly long; computed by :mod:`server.core.signal_report`), printed as tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from server.core import calibration, scoring
from server.core import signal_report as sr
from server.core.calibrator import KellyComponent, payoff_ratio
from server.core.config import Config
from server.core.fusion import fuse
from server.core.kelly import size_positions

FloatArray = npt.NDArray[np.float64]
METRICS: tuple[str, ...] = ("accuracy", "log_loss", "brier", "ece", "auc")


def ece(p: FloatArray, y: FloatArray, n_bins: int = 10) -> float:
    """Expected calibration error of P(up), equal-width bins: the server's own definition, so
    training reports and the calibration RPC agree."""
    return calibration.ece_mce(calibration.reliability_bins(p, y, n_bins, "uniform"))[0]


def score(p: FloatArray, y: FloatArray) -> dict[str, float]:
    """Accuracy (threshold 0.5), log-loss, Brier, ECE (10 bins) and ROC AUC of P(up) against y."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    auc = roc_auc_score(y, p) if 0 < y.sum() < len(y) and np.ptp(p) > 0 else 0.5
    return {
        **scoring.score(p, y).as_dict(),
        "ece": ece(p, y),
        "auc": float(auc),
        "n": float(len(y)),
    }


def baselines(y_train: FloatArray, y_test: FloatArray) -> dict[str, dict[str, float]]:
    """Always-up, a direction-only rule: scored as p = 0.5 + 1e-6 (a literal p = 1 would have an
    infinite log-loss), so its accuracy is the up-rate and its probability metrics a coin's; and
    the train span's up-rate as a constant probability."""
    up_rate = float(np.mean(y_train))
    n = len(y_test)
    return {
        "always up": score(np.full(n, 0.5 + 1e-6), y_test),
        f"train up-rate ({up_rate:.3f})": score(np.full(n, up_rate), y_test),
    }


def table(rows: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    names = list(rows)
    width = max([len(n) for n in names] + [5])
    head = f"{'model':<{width}}  " + "  ".join(f"{m:>8}" for m in METRICS) + f"  {'n':>6}"
    lines = [title, head, "-" * len(head)] if title else [head, "-" * len(head)]
    for name in names:
        row = rows[name]
        cells = "  ".join(
            f"{row[m]:>8.4f}" if not math.isnan(row.get(m, math.nan)) else f"{'-':>8}"
            for m in METRICS
        )
        lines.append(f"{name:<{width}}  {cells}  {int(row.get('n', 0)):>6}")
    return "\n".join(lines)


# -- the figures of the field: IC and the Kelly-sized strategy beside baselines ------------------


@dataclass(frozen=True)
class SpanForecasts:
    """Both models' P(up) on one span of one series, and what happened after each bar."""

    symbol: str
    p_lstm: FloatArray
    p_ensemble: FloatArray
    #: Labels (1.0: the next close was up) and simple next-bar returns.
    y: FloatArray
    returns: FloatArray
    #: Decision times (bar t) and realization times (bar t + 1) of each sample.
    times: npt.NDArray[np.datetime64]
    realized: npt.NDArray[np.datetime64]

    def __len__(self) -> int:
        return len(self.y)

    def since(self, start: str | np.datetime64) -> SpanForecasts:
        keep = self.times >= np.datetime64(start)
        return SpanForecasts(
            self.symbol,
            self.p_lstm[keep],
            self.p_ensemble[keep],
            self.y[keep],
            self.returns[keep],
            self.times[keep],
            self.realized[keep],
        )


@dataclass(frozen=True)
class Baseline:
    """What the constant long is sized on: the training span's up-rate and the payoff ratio of
    always being long there (mean up return / mean down return)."""

    up_rate: float
    payoff_ratio: float

    @staticmethod
    def of(y_train: FloatArray, returns_train: FloatArray) -> Baseline:
        ratio, _ = payoff_ratio(np.ones(len(returns_train)), returns_train)
        return Baseline(float(np.mean(y_train)), ratio)


@dataclass(frozen=True)
class Signal:
    """A forecast as traded: its P(up) (for the IC) and its signed positions."""

    p_up: FloatArray
    positions: FloatArray


def signals(
    f: SpanForecasts,
    component: KellyComponent,
    config: Config,
    baseline: Baseline | None,
) -> dict[str, Signal]:
    """Buy-and-hold, the constant fractional-Kelly long on the training up-rate, each model alone
    and the fused signal before and after calibration, each sized by the Kelly rule with the Kelly
    component's payoff ratio. The last one is exactly what the server sizes."""
    n, kelly, b = len(f), config.kelly, component.payoff_ratio
    fused = fuse(f.p_lstm, f.p_ensemble, config.fusion)
    out = {"buy and hold": Signal(np.full(n, 0.5), sr.buy_and_hold(n))}
    if baseline is not None:
        out[f"{kelly.fraction:g} Kelly long (p {baseline.up_rate:.3f})"] = Signal(
            np.full(n, baseline.up_rate),
            sr.constant_kelly_long(n, baseline.up_rate, baseline.payoff_ratio, kelly),
        )
    out["lstm"] = Signal(f.p_lstm, sr.kelly_positions(f.p_lstm, b, kelly))
    out["ensemble"] = Signal(f.p_ensemble, sr.kelly_positions(f.p_ensemble, b, kelly))
    out["average (fused)"] = Signal(
        fused.probability_up, sr.kelly_positions(fused.probability_up, b, kelly)
    )
    stakes = size_positions(fused.probability_up, fused.direction, component, kelly)
    out[f"fused + {component.method}"] = Signal(
        component.calibrate(fused.probability_up), fused.direction * stakes
    )
    return out


def score_rows(
    f: SpanForecasts, component: KellyComponent, config: Config, y_train: FloatArray | None
) -> dict[str, dict[str, float]]:
    """The probability scores of the same forecasts (and the naive baselines when the training
    labels are given)."""
    fused = fuse(f.p_lstm, f.p_ensemble, config.fusion).probability_up
    return {
        **(baselines(y_train, f.y) if y_train is not None else {}),
        "lstm": score(f.p_lstm, f.y),
        "ensemble": score(f.p_ensemble, f.y),
        "average (fused)": score(fused, f.y),
        f"fused + {component.method}": score(component.calibrate(fused), f.y),
    }


def signal_reports(
    f: SpanForecasts, component: KellyComponent, config: Config, baseline: Baseline | None
) -> list[sr.SignalReport]:
    return [
        sr.signal_report(name, s.p_up, f.returns, s.positions, times=f.realized)
        for name, s in signals(f, component, config, baseline).items()
    ]


def pooled_reports(
    spans: Sequence[SpanForecasts],
    component: KellyComponent,
    config: Config,
    baseline: Baseline | None,
) -> list[sr.SignalReport]:
    """The same strategies on several series at once: IC over every (series, bar) pair, returns
    of the equal-weight portfolio of the series (see :func:`server.core.signal_report.portfolio_report`)."""
    per_series = [signals(f, component, config, baseline) for f in spans]
    out = []
    for name in per_series[0]:
        p = np.concatenate([s[name].p_up for s in per_series])
        r = np.concatenate([f.returns for f in spans])
        decay = sr.ic_decay(p - 0.5, r, 1)
        strategy = sr.portfolio_report(
            [s[name].positions for s in per_series],
            [f.returns for f in spans],
            [f.realized for f in spans],
        )
        out.append(
            sr.SignalReport(name, sr.information_coefficient(p - 0.5, r), decay[1], strategy)
        )
    return out


def _num(value: float, spec: str, width: int) -> str:
    return (format(value, spec) if math.isfinite(value) else "-").rjust(width)


def _dates(s: sr.StrategyReport) -> str:
    return f"{s.drawdown_peak} .. {s.drawdown_trough}" if s.max_drawdown > 0 else "-"


def signal_table(reports: Sequence[sr.SignalReport], title: str = "") -> str:
    """IC (Spearman, its t, and acted on a bar late) and the strategy's figures, one row each.
    Returns in %, Sharpe with one standard error."""
    width = max([len(r.name) for r in reports] + [8])
    head = (
        f"{'strategy':<{width}}  {'IC':>7} {'t':>5} {'IC late':>7}  {'total':>8} {'annual':>7} "
        f"{'vol':>6} {'Sharpe':>6} {'± se':>5}  {'max DD':>7} {'peak .. trough':>23}  "
        f"{'hit':>6} {'in mkt':>6} {'stake':>6} {'turn':>6}"
    )
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for rep in reports:
        s = rep.strategy
        lines.append(
            f"{rep.name:<{width}}  {_num(rep.ic.spearman, '.4f', 7)} {_num(rep.ic.spearman_t, '.2f', 5)} "
            f"{_num(rep.ic_late, '.4f', 7)}  {_num(100 * s.total_return, '.1f', 7)}% "
            f"{_num(100 * s.annualized_return, '.2f', 6)}% {_num(100 * s.annualized_volatility, '.2f', 5)}% "
            f"{_num(s.sharpe, '.2f', 6)} {_num(s.sharpe_se, '.2f', 5)}  "
            f"{_num(100 * s.max_drawdown, '.1f', 6)}% {_dates(s):>23}  "
            f"{_num(s.hit_rate, '.3f', 6)} {_num(s.exposure, '.3f', 6)} "
            f"{_num(s.mean_abs_position, '.3f', 6)} {_num(s.turnover, '.1f', 6)}"
        )
    return "\n".join(lines)


def ic_year_table(
    f: SpanForecasts, component: KellyComponent, config: Config, title: str = ""
) -> str:
    """Spearman IC (and its t) by calendar year for each model and the fused signal."""
    chosen = {
        name: s.p_up
        for name, s in signals(f, component, config, None).items()
        if name != "buy and hold"
    }
    years = {name: sr.ic_by_year(p - 0.5, f.returns, f.times) for name, p in chosen.items()}
    width = max(len(n) for n in chosen)
    first = next(iter(years.values()))
    head = f"{'year':<6}{'n':>6}  " + "  ".join(f"{n:>{max(width, 14)}}" for n in chosen)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for i, row in enumerate(first):
        cells = "  ".join(
            f"{_num(ys[i].spearman, '+.4f', 7)} (t {_num(ys[i].spearman_t, '+.1f', 4)})".rjust(
                max(width, 14)
            )
            for ys in years.values()
        )
        lines.append(f"{row.year:<6}{row.n:>6}  {cells}")
    return "\n".join(lines)
