"""The Kelly component: a probability calibrator for the fused probability and a payoff ratio.

It is a fitted model like the others (versioned in the registry as kind ``kelly``, file
``kelly.json``), because both parts are estimated from data and both drift. JSON, not pickle: the
serving path never unpickles. Numpy only.

Calibrators:
- ``identity``: p unchanged.
- ``platt``: p' = sigmoid(a * logit(p) + b), fitted by Newton's method on the log-loss.
- ``isotonic``: pool-adjacent-violators fit, applied by linear interpolation between its knots.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
METHODS = ("identity", "platt", "isotonic")
_EPS = 1e-6


def _logit(p: FloatArray) -> FloatArray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(p / (1 - p)), dtype=np.float64)


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def fit_platt(p: FloatArray, y: FloatArray, l2: float = 1e-3) -> tuple[float, float]:
    """(a, b) minimising the log-loss of sigmoid(a*logit(p)+b) against y, with a small L2 pull of
    (a, b) towards the identity (1, 0) so that a tiny sample cannot produce a wild map."""
    x = _logit(np.asarray(p, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    theta = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    design = np.column_stack([x, np.ones_like(x)])
    n = max(len(x), 1)
    for _ in range(100):
        q = _sigmoid(design @ theta)
        grad = design.T @ (q - y) / n + l2 * (theta - prior)
        hess = (design * (q * (1 - q))[:, None]).T @ design / n + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def fit_isotonic(p: FloatArray, y: FloatArray) -> tuple[list[float], list[float]]:
    """Knots (x, y) of the non-decreasing least-squares fit of y on p (pool adjacent violators)."""
    order = np.argsort(p, kind="mergesort")
    xs = np.asarray(p, dtype=np.float64)[order]
    ys = np.asarray(y, dtype=np.float64)[order]
    # Each block: (sum of y, weight, min x, max x); merge while the previous mean is larger.
    sums: list[float] = []
    weights: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for xv, yv in zip(xs.tolist(), ys.tolist(), strict=True):
        sums.append(yv)
        weights.append(1.0)
        lo.append(xv)
        hi.append(xv)
        while len(sums) > 1 and sums[-2] / weights[-2] >= sums[-1] / weights[-1]:
            last_sum, last_weight, last_hi = sums.pop(), weights.pop(), hi.pop()
            lo.pop()
            sums[-1] += last_sum
            weights[-1] += last_weight
            hi[-1] = last_hi
    knots_x: list[float] = []
    knots_y: list[float] = []
    for s, w, a, b in zip(sums, weights, lo, hi, strict=True):
        for xv in (a, b) if b > a else (a,):
            knots_x.append(xv)
            knots_y.append(s / w)
    return knots_x, knots_y


def payoff_ratio(
    p_up: FloatArray, realized_return: FloatArray, default: float = 1.0
) -> tuple[float, int]:
    """Mean win / mean loss of trading the predicted direction, and the number of outcomes used.

    ``default`` is returned when there are no wins or no losses to divide."""
    p_up = np.asarray(p_up, dtype=np.float64)
    r = np.asarray(realized_return, dtype=np.float64)
    signed = np.where(p_up >= 0.5, r, -r)
    wins, losses = signed[signed > 0], signed[signed < 0]
    if len(wins) == 0 or len(losses) == 0:
        return default, len(signed)
    return float(wins.mean() / -losses.mean()), len(signed)


@dataclass(frozen=True)
class KellyComponent:
    method: str = "identity"
    #: Platt parameters (method "platt").
    a: float = 1.0
    b: float = 0.0
    #: Isotonic knots (method "isotonic").
    knots_x: list[float] = field(default_factory=list)
    knots_y: list[float] = field(default_factory=list)
    #: Mean win / mean loss of trading the predicted direction, from the fitting span.
    payoff_ratio: float = 1.0
    #: Outcomes the payoff ratio was estimated from.
    n_outcomes: int = 0
    #: What the component was fitted on (span, metrics before/after), for people.
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibrator method {self.method!r}; expected {METHODS}")
        if not (np.isfinite(self.payoff_ratio) and self.payoff_ratio > 0):
            raise ValueError(f"payoff_ratio must be finite and > 0, got {self.payoff_ratio}")
        if self.method == "isotonic" and (
            len(self.knots_x) < 1 or len(self.knots_x) != len(self.knots_y)
        ):
            raise ValueError("isotonic calibrator needs knots_x and knots_y of equal length >= 1")

    def calibrate(self, p: FloatArray) -> FloatArray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            return _sigmoid(self.a * _logit(p) + self.b)
        if self.method == "isotonic":
            return np.asarray(np.interp(p, *self._knots), dtype=np.float64)
        return p

    def calibrate_one(self, p: float) -> float:
        """:meth:`calibrate` of one probability, in the same operations on floats."""
        if self.method == "platt":
            p = min(max(p, _EPS), 1 - _EPS)
            z = self.a * math.log(p / (1 - p)) + self.b
            try:
                return 1.0 / (1.0 + math.exp(-z))
            except OverflowError:  # numpy's exp gives inf there, and 1 / inf is 0
                return 0.0
        if self.method == "isotonic":
            return float(np.interp(p, *self._knots))
        return p

    @functools.cached_property
    def _knots(self) -> tuple[FloatArray, FloatArray]:
        """The isotonic knots as arrays, converted once rather than on every call."""
        return np.asarray(self.knots_x, dtype=np.float64), np.asarray(
            self.knots_y, dtype=np.float64
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> KellyComponent:
        try:
            raw = json.loads(text)
            return KellyComponent(**raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed Kelly component: {exc}") from None


def fit_kelly_component(
    p_fused: FloatArray,
    y: FloatArray,
    realized_return: FloatArray,
    method: str = "platt",
    default_payoff: float = 1.0,
    info: dict[str, Any] | None = None,
) -> KellyComponent:
    """Fits the calibrator on (p_fused, y) and the payoff ratio on the realized returns of the
    same span: the validation span at training time, recent resolved outcomes when retraining."""
    p_fused = np.asarray(p_fused, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p_fused.shape != y.shape or p_fused.shape != np.shape(realized_return):
        raise ValueError("p_fused, y and realized_return must have the same shape")
    ratio, n = payoff_ratio(p_fused, np.asarray(realized_return, dtype=np.float64), default_payoff)
    common: dict[str, Any] = {"payoff_ratio": ratio, "n_outcomes": n, "info": dict(info or {})}
    if method == "platt":
        a, b = fit_platt(p_fused, y)
        return KellyComponent(method="platt", a=a, b=b, **common)
    if method == "isotonic":
        kx, ky = fit_isotonic(p_fused, y)
        return KellyComponent(method="isotonic", knots_x=kx, knots_y=ky, **common)
    if method == "identity":
        return KellyComponent(method="identity", **common)
    raise ValueError(f"unknown calibrator method {method!r}; expected {METHODS}")
