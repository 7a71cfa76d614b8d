"""Fusion of the LSTM's and the ensemble's P(up) into one prediction.

    p        = w * p_lstm + (1 - w) * p_ensemble                       (w = fusion.lstm_weight)
    agree    = both probabilities on the same side of 0.5
    agreement = 1 - |p_lstm - p_ensemble|                               (1: identical, 0: opposite certainties)
    edge     = |p - 0.5|
    confidence = 0.5 + edge * (1 + agreement_boost)        if agree
               = 0.5 + edge * (1 - disagreement_penalty)   otherwise    (clipped to [0.5, 1])
    direction = up if p >= 0.5 else down

Confidence is the probability the predicted direction is right, moved away from the coin flip when
two different models see the same thing and toward it when they do not. The fused probability itself
is left unadjusted: Kelly sizing uses it after the Kelly component's calibrator, which is fitted on
outcomes, whereas the boost is a prior. Vectorised over numpy arrays (batch of predictions); a
batch of one, the unary Predict path, takes the same rule on Python floats, where numpy's per-call
overhead would cost more than the arithmetic (a test holds the two to the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from server.core.config import FusionConfig

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Fused:
    probability_up: FloatArray
    confidence: FloatArray
    agreement: FloatArray
    #: True where both models pick the same direction.
    agree: npt.NDArray[np.bool_]
    #: +1 up, -1 down.
    direction: npt.NDArray[np.int8]


def fuse(p_lstm: FloatArray, p_ensemble: FloatArray, config: FusionConfig) -> Fused:
    if np.shape(p_lstm) == (1,) and np.shape(p_ensemble) == (1,):
        one = fuse_one(float(p_lstm[0]), float(p_ensemble[0]), config)
        return Fused(
            probability_up=np.array([one.probability_up]),
            confidence=np.array([one.confidence]),
            agreement=np.array([one.agreement]),
            agree=np.array([one.agree]),
            direction=np.array([one.direction], dtype=np.int8),
        )
    p_lstm = np.asarray(p_lstm, dtype=np.float64)
    p_ensemble = np.asarray(p_ensemble, dtype=np.float64)
    p = config.lstm_weight * p_lstm + (1.0 - config.lstm_weight) * p_ensemble
    agree = (p_lstm >= 0.5) == (p_ensemble >= 0.5)
    edge = np.abs(p - 0.5)
    scale = np.where(agree, 1.0 + config.agreement_boost, 1.0 - config.disagreement_penalty)
    confidence = np.clip(0.5 + edge * scale, 0.5, 1.0)
    return Fused(
        probability_up=p,
        confidence=confidence,
        agreement=1.0 - np.abs(p_lstm - p_ensemble),
        agree=agree,
        direction=np.where(p >= 0.5, 1, -1).astype(np.int8),
    )


class FusedOne(NamedTuple):
    """:class:`Fused` of one pair, as Python values."""

    probability_up: float
    confidence: float
    agreement: float
    agree: bool
    #: +1 up, -1 down.
    direction: int


def fuse_one(p_lstm: float, p_ensemble: float, config: FusionConfig) -> FusedOne:
    """:func:`fuse` for one pair, in the same operations and order (so the same floats)."""
    w = config.lstm_weight
    p = w * p_lstm + (1.0 - w) * p_ensemble
    agree = (p_lstm >= 0.5) == (p_ensemble >= 0.5)
    scale = 1.0 + config.agreement_boost if agree else 1.0 - config.disagreement_penalty
    return FusedOne(
        probability_up=p,
        confidence=min(max(0.5 + abs(p - 0.5) * scale, 0.5), 1.0),
        agreement=1.0 - abs(p_lstm - p_ensemble),
        agree=agree,
        direction=1 if p >= 0.5 else -1,
    )
