"""Calibration of stated probabilities against realized outcomes. Numpy only.

Two views of the same predictions:

- **Reliability of P(up)** (``bins``, ECE, MCE, Brier): the forecast ``p_up`` against ``y`` = 1 when
  the next bar closed up. Bins are cut exactly like ``sklearn.calibration.calibration_curve``.
- **Confidence vs correctness** (zones, over/under-confidence): the confidence in the predicted
  direction against whether that direction was right. This is what sizing relies on, and for the
  fused source it differs from max(p_up, 1 - p_up) because of the agreement adjustment.

Murphy's decomposition over K bins (n_k predictions, mean forecast f_k, observed frequency o_k,
base rate o): reliability = sum n_k (f_k - o_k)^2 / N, resolution = sum n_k (o_k - o)^2 / N,
uncertainty = o (1 - o). ``reliability - resolution + uncertainty`` equals the Brier score only up
to the within-bin variance of the forecasts (exact when each bin holds one distinct forecast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from server.core.scoring import brier_score, predicts_up

FloatArray = NDArray[np.float64]
Strategy = Literal["uniform", "quantile"]
ZoneName = Literal["very_low", "low", "medium", "high", "very_high"]
MiscalibrationKind = Literal["overconfident", "underconfident"]

#: Default lower edges of the low / medium / high / very_high zones (very_low starts at 0.5).
DEFAULT_ZONE_EDGES: tuple[float, float, float, float] = (0.52, 0.55, 0.60, 0.70)
ZONE_NAMES: tuple[ZoneName, ...] = ("very_low", "low", "medium", "high", "very_high")


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    mean_predicted: float
    observed_frequency: float
    count: int


@dataclass(frozen=True)
class BrierDecomposition:
    reliability: float
    resolution: float
    uncertainty: float


@dataclass(frozen=True)
class ZoneStats:
    zone: ZoneName
    lower: float
    upper: float
    count: int
    accuracy: float
    mean_confidence: float


@dataclass(frozen=True)
class Miscalibration:
    kind: MiscalibrationKind
    lower: float
    upper: float
    #: Mean confidence minus observed accuracy.
    gap: float
    count: int
    z: float
    evidence: str


#: Reliability bins a caller may ask for (calibration.proto, GetCalibrationRequest.bins).
MIN_BINS = 2
MAX_BINS = 50


@dataclass(frozen=True)
class CalibrationSettings:
    """Thresholds of the judgement (mirrors the calibration fields of MonitoringConfig)."""

    min_samples: int = 50
    max_ece: float = 0.05
    min_bin_count: int = 20
    z_threshold: float = 2.0
    zone_edges: tuple[float, float, float, float] = DEFAULT_ZONE_EDGES


@dataclass(frozen=True)
class CalibrationReport:
    source: str
    count: int
    ece: float
    mce: float
    ece_equal_mass: float
    mce_equal_mass: float
    brier: float
    decomposition: BrierDecomposition
    bins: list[ReliabilityBin]
    zones: list[ZoneStats]
    miscalibrations: list[Miscalibration]
    recommendations: list[str]
    accuracy: float
    mean_confidence: float
    strategy: Strategy = "uniform"
    start: datetime | None = None
    end: datetime | None = None


def _as_float(a: ArrayLike) -> FloatArray:
    return np.asarray(a, dtype=np.float64).ravel()


def bin_edges(
    p: ArrayLike, n_bins: int = 10, strategy: Strategy = "uniform", lo: float = 0.0, hi: float = 1.0
) -> FloatArray:
    """Edges as ``calibration_curve`` cuts them (uniform on [lo, hi], or quantiles of p)."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    x = _as_float(p)
    if strategy == "quantile":
        if x.size == 0:
            return np.linspace(lo, hi, n_bins + 1)
        return np.asarray(np.percentile(x, np.linspace(0, 1, n_bins + 1) * 100), dtype=np.float64)
    if strategy == "uniform":
        return np.linspace(lo, hi, n_bins + 1)
    raise ValueError(f"unknown binning strategy {strategy!r}")


def reliability_bins(
    p: ArrayLike,
    y: ArrayLike,
    n_bins: int = 10,
    strategy: Strategy = "uniform",
    lo: float = 0.0,
    hi: float = 1.0,
) -> list[ReliabilityBin]:
    """Non-empty bins of forecast p against binary outcome y (sklearn's binning rule)."""
    x, t = _as_float(p), _as_float(y)
    if x.shape != t.shape:
        raise ValueError("p and y differ in length")
    edges = bin_edges(x, n_bins, strategy, lo, hi)
    ids = np.searchsorted(edges[1:-1], x)  # side="left", as calibration_curve
    sums = np.bincount(ids, weights=x, minlength=len(edges))
    hits = np.bincount(ids, weights=t, minlength=len(edges))
    counts = np.bincount(ids, minlength=len(edges))
    return [
        ReliabilityBin(
            lower=float(edges[k]),
            upper=float(edges[k + 1]),
            mean_predicted=float(sums[k] / counts[k]),
            observed_frequency=float(hits[k] / counts[k]),
            count=int(counts[k]),
        )
        for k in range(len(edges) - 1)
        if counts[k] > 0
    ]


def ece_mce(bins: Sequence[ReliabilityBin]) -> tuple[float, float]:
    """Count-weighted mean and max of |observed - predicted| over the bins; NaN when empty."""
    total = sum(b.count for b in bins)
    if total == 0:
        return math.nan, math.nan
    gaps = [abs(b.observed_frequency - b.mean_predicted) for b in bins]
    ece = sum(g * b.count for g, b in zip(gaps, bins, strict=True)) / total
    return float(ece), float(max(gaps))


def brier_decomposition(bins: Sequence[ReliabilityBin]) -> BrierDecomposition:
    """Murphy's terms over the bins (see the module docstring for the within-bin caveat)."""
    total = sum(b.count for b in bins)
    if total == 0:
        return BrierDecomposition(math.nan, math.nan, math.nan)
    base = sum(b.observed_frequency * b.count for b in bins) / total
    rel = sum(b.count * (b.mean_predicted - b.observed_frequency) ** 2 for b in bins) / total
    res = sum(b.count * (b.observed_frequency - base) ** 2 for b in bins) / total
    return BrierDecomposition(float(rel), float(res), float(base * (1 - base)))


def confidence_zones(
    confidence: ArrayLike, correct: ArrayLike, edges: Sequence[float] = DEFAULT_ZONE_EDGES
) -> list[ZoneStats]:
    """Accuracy per confidence zone; lower edges inclusive, the top zone includes 1.0."""
    c, ok = _as_float(confidence), _as_float(correct)
    bounds = [0.5, *edges, 1.0]
    zones: list[ZoneStats] = []
    for k, name in enumerate(ZONE_NAMES):
        lower, upper = bounds[k], bounds[k + 1]
        inside = (c >= lower) & ((c <= upper) if k == len(ZONE_NAMES) - 1 else (c < upper))
        n = int(inside.sum())
        zones.append(
            ZoneStats(
                zone=name,
                lower=float(lower),
                upper=float(upper),
                count=n,
                accuracy=float(ok[inside].mean()) if n else math.nan,
                mean_confidence=float(c[inside].mean()) if n else math.nan,
            )
        )
    return zones


def binomial_z(mean_predicted: float, observed: float, count: int) -> float:
    """z of the observed frequency against the stated probability, under the stated one."""
    var = mean_predicted * (1 - mean_predicted) / max(count, 1)
    return (observed - mean_predicted) / math.sqrt(max(var, 1e-12))


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def sidak_z(z: float, tests: int) -> float:
    """|z| that keeps the family-wise two-sided level of ``z`` over ``tests`` tests."""
    if tests <= 1:
        return z
    alpha = 1 - (1 - _two_sided_p(z)) ** (1 / tests)
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _two_sided_p(mid) > alpha else (lo, mid)
    return (lo + hi) / 2


def find_miscalibrations(
    confidence: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 10,
    strategy: Strategy = "uniform",
    min_count: int = 20,
    z_threshold: float = 2.0,
) -> list[Miscalibration]:
    """Confidence bins on [0.5, 1] whose accuracy differs significantly from their confidence.

    A bin is tested when it holds at least ``min_count`` predictions and flagged when the binomial
    |z| of its accuracy against its mean confidence reaches ``z_threshold`` raised by a Sidak
    correction for the number of bins tested (so that ``z_threshold`` keeps its two-sided level for
    the whole report: 2.0 becomes 2.84 with 10 tested bins). Adjacent flagged bins of the same kind
    are merged into one region.
    """
    c, ok = _as_float(confidence), _as_float(correct)
    bins = reliability_bins(c, ok, n_bins, strategy, lo=0.5, hi=1.0)
    tested = [b for b in bins if b.count >= min_count]
    z_crit = sidak_z(z_threshold, len(tested))
    flagged: list[tuple[MiscalibrationKind, ReliabilityBin]] = []
    for b in tested:
        z = binomial_z(b.mean_predicted, b.observed_frequency, b.count)
        if abs(z) >= z_crit:
            flagged.append(("overconfident" if z < 0 else "underconfident", b))
    regions: list[tuple[MiscalibrationKind, list[ReliabilityBin]]] = []
    for kind, b in flagged:
        if regions and regions[-1][0] == kind and regions[-1][1][-1].upper == b.lower:
            regions[-1][1].append(b)
        else:
            regions.append((kind, [b]))
    found: list[Miscalibration] = []
    for kind, members in regions:
        n = sum(m.count for m in members)
        mean_c = sum(m.mean_predicted * m.count for m in members) / n
        acc = sum(m.observed_frequency * m.count for m in members) / n
        z = binomial_z(mean_c, acc, n)
        gap = mean_c - acc
        lower, upper = members[0].lower, members[-1].upper
        found.append(
            Miscalibration(
                kind=kind,
                lower=lower,
                upper=upper,
                gap=float(gap),
                count=n,
                z=float(z),
                evidence=(
                    f"confidence {lower:.2f}-{upper:.2f}: mean confidence {mean_c:.3f}, "
                    f"accuracy {acc:.3f} (gap {gap:+.3f}) over n={n}, binomial z={z:+.2f} "
                    f"(|z| >= {z_crit:.2f} needed over {len(tested)} bins)"
                ),
            )
        )
    return found


def _recommend(
    source: str,
    n: int,
    ece: float,
    miscalibrations: Sequence[Miscalibration],
    settings: CalibrationSettings,
) -> list[str]:
    if n == 0:
        return [f"no resolved {source} predictions: calibration cannot be judged"]
    if n < settings.min_samples:
        return [
            f"too few outcomes (n={n}) to judge calibration; "
            f"at least {settings.min_samples} are needed"
        ]
    out: list[str] = []
    for m in miscalibrations:
        where = f"above {m.lower:.2f}" if m.upper >= 1.0 else f"in {m.lower:.2f}-{m.upper:.2f}"
        if m.kind == "overconfident":
            out.append(
                f"{source} overconfident {where} (gap {m.gap:+.3f}, n={m.count}): refit its calibrator"
            )
        else:
            out.append(
                f"{source} underconfident {where} (gap {m.gap:+.3f}, n={m.count}): "
                "its stakes are smaller than its accuracy warrants; refit its calibrator"
            )
    if ece > settings.max_ece and not miscalibrations:
        out.append(
            f"ECE {ece:.3f} above tolerance {settings.max_ece:.3f} but no region is significant: "
            "collect more outcomes before acting"
        )
    if not out:
        out.append(f"calibration within tolerance (ECE {ece:.3f} <= {settings.max_ece:.3f})")
    return out


def calibration_report(
    source: str,
    p_up: ArrayLike,
    y: ArrayLike,
    confidence: ArrayLike | None = None,
    n_bins: int = 10,
    strategy: Strategy = "uniform",
    correct: ArrayLike | None = None,
    settings: CalibrationSettings | None = None,
) -> CalibrationReport:
    """Full report of one source.

    ``y`` is 1 when the bar closed up. ``confidence`` defaults to max(p_up, 1 - p_up) and
    ``correct`` to the served direction (P(up) >= 0.5) == y; the fused source passes its own confidence and hit columns.
    """
    settings = settings or CalibrationSettings()
    p, t = _as_float(p_up), _as_float(y)
    if p.shape != t.shape:
        raise ValueError("p_up and y differ in length")
    conf = np.maximum(p, 1 - p) if confidence is None else _as_float(confidence)
    ok = (predicts_up(p) == (t > 0.5)).astype(np.float64) if correct is None else _as_float(correct)
    n = int(p.size)
    bins = reliability_bins(p, t, n_bins, strategy)
    uniform = bins if strategy == "uniform" else reliability_bins(p, t, n_bins, "uniform")
    quantile = bins if strategy == "quantile" else reliability_bins(p, t, n_bins, "quantile")
    ece, mce = ece_mce(uniform)
    ece_q, mce_q = ece_mce(quantile)
    miscal = (
        find_miscalibrations(
            conf, ok, n_bins, strategy, settings.min_bin_count, settings.z_threshold
        )
        if n >= settings.min_samples
        else []
    )
    return CalibrationReport(
        source=source,
        count=n,
        ece=ece,
        mce=mce,
        ece_equal_mass=ece_q,
        mce_equal_mass=mce_q,
        brier=brier_score(p, t),
        decomposition=brier_decomposition(bins),
        bins=bins,
        zones=confidence_zones(conf, ok, settings.zone_edges),
        miscalibrations=miscal,
        recommendations=_recommend(source, n, ece, miscal, settings),
        accuracy=float(ok.mean()) if n else math.nan,
        mean_confidence=float(conf.mean()) if n else math.nan,
        strategy=strategy,
    )
