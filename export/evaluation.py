"""Out-of-sample scores of probability forecasts, beside naive baselines, printed as one table."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from server.core import calibration, scoring

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
