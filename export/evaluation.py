"""Out-of-sample scores of probability forecasts, beside naive baselines, printed as one table."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

FloatArray = npt.NDArray[np.float64]
METRICS: tuple[str, ...] = ("accuracy", "log_loss", "brier", "ece", "auc")
_EPS = 1e-12


def ece(p: FloatArray, y: FloatArray, n_bins: int = 10) -> float:
    """Expected calibration error of P(up) over equal-width bins (weighted mean |freq - mean p|)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = ids == b
        if mask.any():
            total += mask.sum() * abs(float(y[mask].mean()) - float(p[mask].mean()))
    return total / max(len(p), 1)


def score(p: FloatArray, y: FloatArray) -> dict[str, float]:
    """Accuracy (threshold 0.5), log-loss, Brier, ECE (10 bins) and ROC AUC of P(up) against y."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    auc = roc_auc_score(y, p) if 0 < y.sum() < len(y) and np.ptp(p) > 0 else 0.5
    return {
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": ece(p, y),
        "auc": float(auc),
        "n": float(len(y)),
    }


def baselines(y_train: FloatArray, y_test: FloatArray) -> dict[str, dict[str, float]]:
    """Always-up (p = 1, scored with p clipped to 1 - 1e-12 it would be infinite log-loss, so it is
    scored as p = 0.5 + epsilon for the probability metrics' sake: direction-only) and the train
    span's up-rate as a constant probability."""
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
