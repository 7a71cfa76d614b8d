"""A batch of one (unary Predict) takes fusion, calibration and Kelly sizing on Python floats; a
batch of several takes them in numpy. Both must give the same numbers for every input, every
fusion setting and every calibrator, or a prediction would depend on how it was requested."""

from __future__ import annotations

import numpy as np
import pytest

from server.core.calibrator import KellyComponent, fit_isotonic
from server.core.config import FusionConfig, KellyConfig
from server.core.fusion import fuse
from server.core.kelly import size_positions

pytestmark = pytest.mark.serving

TOL = 1e-12
EDGES = [0.0, 1e-9, 0.25, 0.4999999, 0.5, 0.5000001, 0.75, 1 - 1e-9, 1.0]
FUSIONS = [
    FusionConfig(),
    FusionConfig(agreement_boost=0.0, disagreement_penalty=0.0, lstm_weight=1.0),
    FusionConfig(agreement_boost=1.5, disagreement_penalty=1.0, lstm_weight=0.2),
]


def _components() -> list[KellyComponent]:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.3, 0.7, 400)
    y = (rng.uniform(size=400) < p).astype(float)
    kx, ky = fit_isotonic(p, y)
    return [
        KellyComponent(),
        KellyComponent(method="platt", a=0.8, b=0.05, payoff_ratio=1.3),
        # Steep enough that exp overflows for confident inputs: numpy gives 0 there.
        KellyComponent(method="platt", a=60.0, b=-3.0, payoff_ratio=0.7),
        KellyComponent(method="isotonic", knots_x=kx, knots_y=ky, payoff_ratio=1.1),
    ]


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    grid_a, grid_b = np.meshgrid(EDGES, EDGES)
    a = np.concatenate([grid_a.ravel(), rng.uniform(size=500)])
    b = np.concatenate([grid_b.ravel(), rng.uniform(size=500)])
    return a, b


@pytest.mark.parametrize("config", FUSIONS)
def test_fusing_one_pair_equals_fusing_it_in_a_batch(config: FusionConfig) -> None:
    a, b = _pairs()
    batch = fuse(a, b, config)
    for i in range(len(a)):
        one = fuse(a[i : i + 1], b[i : i + 1], config)
        for name in ("probability_up", "confidence", "agreement"):
            assert abs(getattr(one, name)[0] - getattr(batch, name)[i]) <= TOL, (name, a[i], b[i])
        assert one.direction[0] == batch.direction[i] and one.direction.dtype == np.int8
        assert one.agree[0] == batch.agree[i]


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("component", _components(), ids=lambda c: f"{c.method}-{c.a}")
def test_sizing_one_prediction_equals_sizing_it_in_a_batch(component: KellyComponent) -> None:
    a, b = _pairs()
    fused = fuse(a, b, FusionConfig())
    kelly = KellyConfig(fraction=0.5, cap=0.2)
    batch = size_positions(fused.probability_up, fused.direction, component, kelly)
    assert np.any(batch > 0) or component.method == "identity"
    for i in range(len(a)):
        one = size_positions(
            fused.probability_up[i : i + 1], fused.direction[i : i + 1], component, kelly
        )
        assert one.shape == (1,)
        assert abs(one[0] - batch[i]) <= TOL, (component.method, fused.probability_up[i])
        p = float(fused.probability_up[i])
        assert abs(component.calibrate_one(p) - component.calibrate(np.array([p]))[0]) <= TOL
