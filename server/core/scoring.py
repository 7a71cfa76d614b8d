"""How a probability of "up" is scored against what happened: the one hit rule, the proper scores,
and the champion/challenger gate built on them. Training, the data plane, the monitor, probation
and the retraining gate all score through this module, so a flat bar means the same everywhere."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def went_up(realized_return: ArrayLike) -> BoolArray:
    """The label: a bar went up when its close-to-close return is strictly positive. A flat bar
    (return exactly 0) is "not up", as the training labels have it, so a DOWN call on it is a hit."""
    return np.asarray(np.asarray(realized_return, dtype=np.float64) > 0)


def predicts_up(p_up: ArrayLike) -> BoolArray:
    """The served direction: up when P(up) >= 0.5."""
    return np.asarray(np.asarray(p_up, dtype=np.float64) >= 0.5)


def hits(predicted_up: ArrayLike, realized_return: ArrayLike) -> BoolArray:
    """Per prediction: the called direction equals the label."""
    return np.asarray(np.asarray(predicted_up, dtype=np.bool_) == went_up(realized_return))


def went_up_one(realized_return: float) -> bool:
    """:func:`went_up` of one return, on a float (a stream labels each bar it resolves)."""
    return realized_return > 0


def is_hit(direction: int, realized_return: float) -> bool:
    """:func:`hits` for one prediction with ``direction`` +1 (up) or -1 (down)."""
    return (direction > 0) == went_up_one(realized_return)


def _as_float(a: ArrayLike) -> FloatArray:
    return np.asarray(a, dtype=np.float64).ravel()


def brier_score(p: ArrayLike, y: ArrayLike) -> float:
    x, t = _as_float(p), _as_float(y)
    return float(np.mean((x - t) ** 2)) if x.size else math.nan


def log_loss(p: ArrayLike, y: ArrayLike, eps: float = 1e-12) -> float:
    """Mean binary cross-entropy of P(up) against 0/1 labels (p clipped to [eps, 1 - eps])."""
    x, t = np.clip(_as_float(p), eps, 1 - eps), _as_float(y)
    return float(-np.mean(t * np.log(x) + (1 - t) * np.log(1 - x))) if x.size else math.nan


def direction_accuracy(p: ArrayLike, y: ArrayLike) -> float:
    """Share of right directions: the served rule (up when P(up) >= 0.5) against 0/1 labels."""
    x, t = _as_float(p), _as_float(y)
    return float(np.mean(predicts_up(x) == (t > 0.5))) if x.size else math.nan


@dataclass(frozen=True)
class Scores:
    log_loss: float
    brier: float
    accuracy: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "log_loss": self.log_loss, "brier": self.brier}


def score(p: ArrayLike, y: ArrayLike) -> Scores:
    """Log-loss, Brier and accuracy of P(up) against labels (0/1)."""
    p_arr = np.asarray(p, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    if p_arr.shape != y_arr.shape or p_arr.size == 0:
        raise ValueError("need equally long, non-empty probabilities and labels")
    return Scores(
        log_loss=log_loss(p_arr, y_arr),
        brier=brier_score(p_arr, y_arr),
        accuracy=direction_accuracy(p_arr, y_arr),
        n=int(y_arr.size),
    )


def gate_decision(
    champion: Scores | None,
    challenger: Scores,
    min_log_loss_improvement: float,
    min_brier_improvement: float,
) -> tuple[bool, str]:
    """The challenger passes when it improves on the champion's log-loss *and* Brier score by more
    than the margins (proper scores, not accuracy). Without a champion it passes."""
    if not (math.isfinite(challenger.log_loss) and math.isfinite(challenger.brier)):
        return False, "challenger scores are not finite"
    if champion is None:
        return True, "no deployed champion"
    gain_ll = champion.log_loss - challenger.log_loss
    gain_brier = champion.brier - challenger.brier
    facts = (
        f"log-loss {challenger.log_loss:.5f} vs {champion.log_loss:.5f} "
        f"(gain {gain_ll:+.5f}, margin {min_log_loss_improvement:g}); "
        f"Brier {challenger.brier:.5f} vs {champion.brier:.5f} "
        f"(gain {gain_brier:+.5f}, margin {min_brier_improvement:g}) on {challenger.n} bars"
    )
    if not gain_ll > min_log_loss_improvement:
        return False, f"does not beat the champion on log-loss: {facts}"
    if not gain_brier > min_brier_improvement:
        return False, f"does not beat the champion on Brier: {facts}"
    return True, f"beats the champion: {facts}"
