"""The pure functions behind the dashboard's aggregates: rolling series and the levels drawn beside
them (checked against the health score they invert), equity and drawdown, hit rates by agreement,
the stake histogram, and what a manifest says about its version."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from server.core.config import MonitoringConfig
from server.core.manifest import FeatureSpec, Manifest
from server.core.model_card import COIN_FLIP, comparisons, flatten_settings, model_card, spans
from server.monitoring import health_score as hs
from server.monitoring import performance as perf
from server.monitoring import series as ser
from server.monitoring import trends as tr

pytestmark = pytest.mark.serving

CFG = MonitoringConfig()


def test_window_ends_spread_from_the_first_full_window_to_the_last() -> None:
    ends = ser.window_ends(n=1000, window=100, points=60)
    assert ends[0] == 99 and ends[-1] == 999
    assert len(ends) == 60 and np.all(np.diff(ends) > 0)
    assert ser.window_ends(n=5, window=100, points=60).tolist() == [4]
    assert ser.window_ends(n=20, window=3, points=100).tolist() == list(range(2, 20))
    assert ser.window_ends(n=0, window=3, points=10).size == 0


def test_rolling_mean_and_percentile_match_a_brute_force_window() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    mask = rng.random(300) < 0.7
    ends = ser.window_ends(300, 40, 25)
    mean, count = ser.rolling_mean(x, ends, 40, mask)
    p99 = ser.rolling_percentile(x, ends, 40, 99)
    for i, e in enumerate(ends):
        window = slice(max(0, e - 39), e + 1)
        assert count[i] == mask[window].sum()
        assert mean[i] == pytest.approx(x[window][mask[window]].mean())
        assert p99[i] == pytest.approx(np.percentile(x[window], 99))
    empty, none = ser.rolling_mean(x, ends, 40, np.zeros(300, dtype=bool))
    assert np.isnan(empty).all() and (none == 0).all()


@pytest.mark.parametrize("level", [CFG.warn_health_score, CFG.critical_health_score])
def test_accuracy_levels_are_where_the_health_sub_score_reaches_them(level: float) -> None:
    counts = np.array([40, 100, 400])
    accuracy = ser.proportion_level(0.52, counts, level, CFG.health_z_floor)
    for n, acc in zip(counts, accuracy, strict=True):
        scored = hs.score_component(CFG, resolved=int(n), accuracy=acc, expected_accuracy=0.52)
        assert scored.subscores["accuracy"] == pytest.approx(level)
    assert accuracy[0] < accuracy[1] < accuracy[2] < 0.52  # fewer outcomes, wider band


@pytest.mark.parametrize("level", [CFG.warn_health_score, CFG.critical_health_score])
def test_overconfidence_level_is_where_the_confidence_sub_score_reaches_it(level: float) -> None:
    accuracy = np.array([0.45, 0.52, 0.6])
    counts = np.array([50, 100, 300])
    confidence = ser.overconfidence_level(accuracy, counts, level, CFG.health_z_floor)
    for acc, n, conf in zip(accuracy, counts, confidence, strict=True):
        assert conf > acc
        scored = hs.score_component(
            CFG, resolved=int(n), accuracy=acc, expected_accuracy=acc, mean_confidence=conf
        )
        assert scored.subscores["confidence"] == pytest.approx(level)


def test_fixed_profile_levels_invert_its_absolute_ramps() -> None:
    fixed = dataclasses.replace(CFG, profile="fixed")
    acc = ser.absolute_level(fixed.fixed_min_accuracy, 0.5, fixed.warn_health_score)
    scored = hs.score_component(fixed, resolved=100, accuracy=acc, expected_accuracy=0.5)
    assert scored.subscores["accuracy"] == pytest.approx(fixed.warn_health_score)
    rng = np.random.default_rng(2)
    n = 500
    series = ser.metric_series(
        fixed,
        {},
        lstm_p=rng.random(n),
        ensemble_p=rng.random(n),
        confidence=0.5 + rng.random(n) / 4,
        latency_ms=rng.random(n),
        resolved=np.ones(n, dtype=bool),
        up=rng.random(n) < 0.5,
        hit=rng.random(n) < 0.5,
        window=100,
        points=20,
    )
    accuracy = next(s for s in series if s.metric == "accuracy" and s.component == "fusion")
    warn = next(line for line in accuracy.lines if line.severity == "warning")
    assert np.allclose(warn.values, acc)


def test_latency_anomaly_level_is_the_robust_z_threshold() -> None:
    values = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 1.0])
    level = ser.robust_upper_level(values, CFG.anomaly_z)
    assert tr.robust_z(values, level) == pytest.approx(CFG.anomaly_z)
    assert math.isnan(ser.robust_upper_level(np.array([math.nan]), 4.0))


def test_metric_series_follow_the_predictions() -> None:
    rng = np.random.default_rng(3)
    n, window = 400, 50
    lstm_p = rng.uniform(0.4, 0.6, n)
    ensemble_p = rng.uniform(0.4, 0.6, n)
    up = rng.random(n) < 0.55
    resolved = np.ones(n, dtype=bool)
    resolved[-1] = False  # the newest prediction waits for its bar
    hit = ((lstm_p + ensemble_p) / 2 >= 0.5) == up
    hit[-1] = False
    reference = {"lstm": 0.51, "ensemble": 0.52, "fusion": 0.53, "agreement": 0.75}
    series = ser.metric_series(
        CFG,
        reference,
        lstm_p=lstm_p,
        ensemble_p=ensemble_p,
        confidence=np.full(n, 0.55),
        latency_ms=np.arange(n, dtype=float),
        resolved=resolved,
        up=up,
        hit=hit,
        window=window,
        points=30,
    )
    named = {(s.metric, s.component): s for s in series}
    assert set(named) == {
        ("accuracy", "lstm"),
        ("accuracy", "ensemble"),
        ("accuracy", "fusion"),
        ("mean_confidence", "fusion"),
        ("agreement_rate", "fusion"),
        ("latency_p50_ms", "server"),
        ("latency_p99_ms", "server"),
    }
    fused = named["accuracy", "fusion"]
    last = slice(n - window, n)
    assert fused.ends[-1] == n - 1
    assert fused.counts[-1] == window - 1
    assert fused.values[-1] == pytest.approx(hit[last][resolved[last]].mean())
    lstm = named["accuracy", "lstm"]
    assert lstm.values[-1] == pytest.approx(((lstm_p >= 0.5) == up)[last][:-1].mean())
    expected = next(line for line in lstm.lines if line.severity is None)
    assert np.allclose(expected.values, 0.51)
    agreement = named["agreement_rate", "fusion"]
    assert agreement.values[-1] == pytest.approx(
        ((lstm_p >= 0.5) == (ensemble_p >= 0.5))[last].mean()
    )
    assert next(line for line in agreement.lines if line.severity is None).values[0] == 0.75
    assert named["latency_p50_ms", "server"].values[-1] == pytest.approx(
        np.median(np.arange(n - window, n))
    )
    for s in series:
        assert s.values.shape == s.ends.shape == s.counts.shape
        assert all(line.values.shape == s.ends.shape for line in s.lines)


def test_agreement_hit_rates_split_at_the_threshold() -> None:
    agreement = np.array([0.95, 0.8, 0.79, 0.5, 0.99])
    hit = np.array([True, False, True, True, True])
    high, rest = perf.agreement_hit_rates(agreement, hit, 0.8)
    assert (high.resolved, high.hits) == (3, 2)
    assert (rest.resolved, rest.hits) == (2, 2)
    assert high.hit_rate == pytest.approx(2 / 3) and rest.hit_rate == 1.0
    none, _ = perf.agreement_hit_rates(np.array([0.1]), np.array([True]), 0.8)
    assert none.resolved == 0 and math.isnan(none.hit_rate)


def test_equity_and_drawdown() -> None:
    position = np.array([0.1, -0.1, 0.0, 0.25])
    market = np.array([0.01, -0.02, 0.03, -0.01])
    e = perf.equity_curves(position, market)
    assert e.kelly.tolist() == pytest.approx([1.1, 0.99, 0.99, 1.2375])
    assert e.kelly_drawdown.tolist() == pytest.approx([0.0, -0.1, -0.1, 0.0])
    assert e.kelly_return == pytest.approx(0.2375)
    assert e.kelly_max_drawdown == pytest.approx(-0.1)
    assert e.buy_and_hold[-1] == pytest.approx(np.prod(1 + market))
    assert e.buy_and_hold_max_drawdown == pytest.approx(0.9898 / 1.01 - 1)
    empty = perf.equity_curves(np.empty(0), np.empty(0))
    assert empty.kelly_return == 0.0 and empty.kelly_max_drawdown == 0.0


def test_sample_indices_keep_the_ends() -> None:
    assert perf.sample_indices(5, 300).tolist() == [0, 1, 2, 3, 4]
    picked = perf.sample_indices(10_000, 300)
    assert picked[0] == 0 and picked[-1] == 9_999 and len(picked) == 300
    assert perf.sample_indices(0, 10).size == 0


def test_stake_histogram_counts_stakes_above_zero_in_right_closed_bins() -> None:
    stakes = np.array([0.0, 0.0, 0.025, 0.0251, 0.1, 0.25, 0.25, 1e-9])
    h = perf.stake_histogram(stakes, cap=0.25, bins=10)
    assert h.edges[0] == 0.0 and h.edges[-1] == 0.25 and h.counts.size == 10
    assert h.counts.tolist() == [2, 1, 0, 1, 0, 0, 0, 0, 0, 2]
    assert (h.predictions, h.sized, h.capped) == (8, 6, 2)
    assert h.sized_share == pytest.approx(6 / 8) and h.capped_share == pytest.approx(2 / 8)
    assert h.mean_stake == pytest.approx(stakes[stakes > 0].mean())
    none = perf.stake_histogram(np.zeros(3), cap=0.25, bins=5)
    assert none.counts.sum() == 0 and none.sized_share == 0.0 and math.isnan(none.mean_stake)


def _manifest(kind: str, version: str, **kwargs: object) -> Manifest:
    spec = kwargs.pop("spec", FeatureSpec(("a", "b"), 20, 69, "1999-04-13", "2010-12-01"))
    return Manifest(
        kind=kind,
        version=version,
        sha256="0" * 64,
        file="model.onnx",
        created_at="2026-01-01T00:00:00Z",
        feature_spec=spec,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def test_model_card_spans_baselines_and_settings() -> None:
    lstm = _manifest(
        "lstm",
        "v1",
        metrics={"val_accuracy": 0.51, "val_log_loss": 0.69, "test_brier": 0.251},
        info={"seed": 7, "settings": {"hidden": 32, "lr": 0.001}, "epochs_run": 6, "job": "j1"},
    )
    kelly = _manifest(
        "kelly",
        "k1",
        spec=FeatureSpec((), 0, 0, "2011-01-03", "2012-11-29"),
        metrics={
            "val_log_loss": 0.690,
            "val_uncalibrated_log_loss": 0.694,
            "test_accuracy": 0.54,
            "test_up_rate": 0.54,
            "test_uncalibrated_accuracy": 0.51,
        },
        info={"method": "platt", "models": {"lstm": "v1", "ensemble": "e1"}},
    )
    assert [(s.name, s.start, s.end) for s in spans(lstm, [kelly])] == [
        ("train", "1999-04-13", "2010-12-01"),
        ("validation", "2011-01-03", "2012-11-29"),
    ]
    assert [s.name for s in spans(lstm, [])] == ["train"]
    assert [(s.name, s.start) for s in spans(kelly)] == [("fitted on", "2011-01-03")]
    retrained = _manifest("ensemble", "e2", info={"held_out": ["2018-01-02", "2018-12-28"]})
    assert spans(retrained)[-1].name == "test"

    rows = {(c.span, c.metric, c.baseline): (c.value, c.baseline_value) for c in comparisons(lstm)}
    assert rows[("val", "log_loss", "coin flip")] == (0.69, COIN_FLIP["log_loss"])
    assert rows[("test", "brier", "coin flip")] == (0.251, 0.25)
    no_baseline = rows[("val", "accuracy", "")]
    assert no_baseline[0] == 0.51 and math.isnan(no_baseline[1])
    kelly_rows = {(c.span, c.metric, c.baseline): c.baseline_value for c in comparisons(kelly)}
    assert kelly_rows[("val", "log_loss", "uncalibrated fused")] == 0.694
    assert kelly_rows[("test", "accuracy", "always up")] == 0.54
    assert kelly_rows[("test", "accuracy", "uncalibrated fused")] == 0.51

    card = model_card(lstm, [kelly])
    assert card.job_id == "j1"
    assert dict(card.settings) == {
        "epochs_run": "6",
        "seed": "7",
        "settings.hidden": "32",
        "settings.lr": "0.001",
    }
    assert flatten_settings({"models": {"lstm": "v1"}, "members": ["a", "b"], "x": True}) == [
        ("members", "a, b"),
        ("models.lstm", "v1"),
        ("x", "true"),
    ]
