"""The signal report (server/core/signal_report.py): each figure against a hand computation or
scipy, the flat strategy, the look-ahead check, and where the figures show (training, the
multi-instrument evaluation, the retraining gate, the replay summary)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from clients.replay import ReplaySummary
from export import retrain_worker
from export.data import MarketData
from export.evaluation import SpanForecasts, signal_reports
from export.instruments import DeployedSet, evaluate, forecasts
from export.train import Dataset
from minhos.v1 import common_pb2, inference_pb2
from server.core import features as F
from server.core import signal_report as sr
from server.core.calibrator import KellyComponent
from server.core.config import KellyConfig, load_config
from server.core.kelly import size_positions
from server.storage.registry import ModelRepository
from server.storage.schema import open_database
from tests.conftest import TRAIN_END, Trained
from tests.tiny_models import TINY

KELLY = KellyConfig(fraction=0.5, cap=0.25, default_payoff_ratio=1.0)


def _random(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, n)
    signal = 0.1 * r / 0.01 + rng.normal(0.0, 1.0, n)
    return signal, r


# -- correlations against scipy ------------------------------------------------------------------


def test_average_ranks_match_scipy_with_ties() -> None:
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    np.testing.assert_allclose(sr.average_ranks(x), stats.rankdata(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_information_coefficient_matches_scipy(seed: int) -> None:
    signal, r = _random(60, seed)
    signal = np.round(signal, 1)  # ties, so the ranks' tie rule matters
    ic = sr.information_coefficient(signal, r)
    pearson = stats.pearsonr(signal, r)
    spearman = stats.spearmanr(signal, r)
    assert ic.pearson == pytest.approx(pearson.statistic, abs=1e-12)
    assert ic.spearman == pytest.approx(spearman.statistic, abs=1e-12)
    # scipy's p-values are the two-sided t-test with n - 2 degrees of freedom on these t's.
    assert 2 * stats.t.sf(abs(ic.pearson_t), 58) == pytest.approx(pearson.pvalue, rel=1e-6)
    assert 2 * stats.t.sf(abs(ic.spearman_t), 58) == pytest.approx(spearman.pvalue, rel=1e-6)
    assert ic.n == 60
    assert ic.spearman / ic.spearman_se == pytest.approx(ic.spearman_t)


def test_correlation_of_a_constant_is_undefined() -> None:
    ic = sr.information_coefficient(np.zeros(10), np.arange(10.0))
    assert math.isnan(ic.pearson) and math.isnan(ic.spearman) and math.isnan(ic.spearman_t)


def test_ic_by_year_matches_scipy_per_year() -> None:
    signal, r = _random(30, 4)
    times = np.array(
        ["2011-12-20"] * 10 + ["2012-06-01"] * 12 + ["2013-01-02"] * 8, dtype="datetime64[s]"
    )
    years = sr.ic_by_year(signal, r, times)
    assert [(y.year, y.n) for y in years] == [(2011, 10), (2012, 12), (2013, 8)]
    for y, (lo, hi) in zip(years, [(0, 10), (10, 22), (22, 30)], strict=True):
        assert y.spearman == pytest.approx(stats.spearmanr(signal[lo:hi], r[lo:hi]).statistic)
        assert y.pearson == pytest.approx(stats.pearsonr(signal[lo:hi], r[lo:hi]).statistic)


def test_mismatched_or_non_finite_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        sr.information_coefficient(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        sr.strategy_report(np.array([1.0, np.nan]), np.zeros(2))


# -- the strategy's figures by hand --------------------------------------------------------------


def test_strategy_figures_by_hand() -> None:
    positions = np.array([1.0, 0.5, 0.0, -1.0])
    returns = np.array([0.1, -0.2, 0.05, -0.1])
    times = np.array(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"], "datetime64[s]")
    rep = sr.strategy_report(positions, returns, times=times, periods_per_year=252)
    # Per-bar returns 0.1, -0.1, 0, 0.1; equity 1, 1.1, 0.99, 0.99, 1.089.
    assert rep.total_return == pytest.approx(0.089)
    assert rep.annualized_return == pytest.approx(1.089 ** (252 / 4) - 1)
    mean, var = 0.025, (0.075**2 * 2 + 0.125**2 + 0.025**2) / 3
    assert rep.annualized_volatility == pytest.approx(math.sqrt(var) * math.sqrt(252))
    assert rep.sharpe == pytest.approx(mean / math.sqrt(var) * math.sqrt(252))
    per_bar = mean / math.sqrt(var)
    assert rep.sharpe_se == pytest.approx(math.sqrt((1 + per_bar**2 / 2) / 4) * math.sqrt(252))
    # From 1.1 (after the first bar) down to 0.99: 10 %, never recovered.
    assert rep.max_drawdown == pytest.approx(0.1)
    assert (rep.drawdown_peak, rep.drawdown_trough, rep.drawdown_recovery) == (
        "2020-01-02",
        "2020-01-03",
        "",
    )
    # Active bars 0, 1, 3: long up (hit), long down (miss), short down (hit).
    assert rep.active_bars == 3 and rep.hit_rate == pytest.approx(2 / 3)
    assert rep.hit_rate_se == pytest.approx(math.sqrt(2 / 3 * 1 / 3 / 3))
    assert rep.exposure == pytest.approx(0.75)
    assert rep.mean_abs_position == pytest.approx(2.5 / 4)
    # |1 - 0| + |0.5 - 1| + |0 - 0.5| + |-1 - 0| = 3 over 4 bars, annualised.
    assert rep.turnover == pytest.approx(3 / 4 * 252)


def test_drawdown_recovery_and_curves() -> None:
    equity = sr.equity_curve([0.1, -0.5, 0.2, 1.0, -0.1])
    np.testing.assert_allclose(equity, [1, 1.1, 0.55, 0.66, 1.32, 1.188])
    np.testing.assert_allclose(sr.drawdown_curve(equity), [0, 0, -0.5, -0.4, 0, -0.1])
    assert sr.max_drawdown(equity) == sr.Drawdown(pytest.approx(0.5), 1, 2, 4)  # type: ignore[arg-type]


def test_always_flat_has_sharpe_zero_and_no_drawdown() -> None:
    _, r = _random(100, 5)
    rep = sr.strategy_report(np.zeros(100), r)
    assert rep.sharpe == 0.0 and rep.max_drawdown == 0.0 and rep.total_return == 0.0
    assert rep.annualized_volatility == 0.0 and rep.turnover == 0.0 and rep.exposure == 0.0
    assert math.isnan(rep.hit_rate) and rep.active_bars == 0
    assert rep.drawdown_peak == rep.drawdown_trough == rep.drawdown_recovery == ""


def test_buy_and_hold_compounds_the_returns() -> None:
    _, r = _random(50, 6)
    rep = sr.strategy_report(sr.buy_and_hold(50), r)
    assert rep.total_return == pytest.approx(np.prod(1 + r) - 1)
    assert rep.exposure == 1.0 and rep.turnover == pytest.approx(252 / 50)


def test_portfolio_is_equal_weight_per_date() -> None:
    t = np.array(["2020-01-01", "2020-01-02", "2020-01-03"], "datetime64[s]")
    when, returns = sr.portfolio_returns([[0.1, 0.2], [0.0, -0.1]], [t[:2], t[1:]])
    np.testing.assert_array_equal(when, t)
    np.testing.assert_allclose(returns, [0.1, 0.1, -0.1])
    rep = sr.portfolio_report([[1.0, 1.0], [0.0, 1.0]], [[0.1, 0.2], [0.0, -0.1]], [t[:2], t[1:]])
    assert rep.n == 3 and rep.total_return == pytest.approx(1.1 * 1.1 * 0.9 - 1)
    assert rep.hit_rate == pytest.approx(2 / 3) and rep.exposure == pytest.approx(3 / 4)


# -- positions -----------------------------------------------------------------------------------


def test_kelly_positions_by_hand_and_as_served() -> None:
    p = np.array([0.6, 0.4, 0.5, 0.9])
    # Full Kelly with b = 1 is 2p - 1 on the predicted side: 0.2, 0.2, 0, 0.8; half, capped 0.25.
    np.testing.assert_allclose(sr.kelly_positions(p, 1.0, KELLY), [0.1, -0.1, 0.0, 0.25])
    component = KellyComponent(method="platt", a=0.5, b=0.1, payoff_ratio=1.2)
    fused = np.array([0.3, 0.45, 0.55, 0.8])
    direction = np.where(fused >= 0.5, 1, -1).astype(np.int8)
    served = direction * size_positions(fused, direction, component, KELLY)
    ours = sr.kelly_positions(component.calibrate(fused), 1.2, KELLY, direction)
    np.testing.assert_allclose(ours, served)


def test_constant_kelly_long() -> None:
    # p = 0.55, b = 1: full Kelly 0.1, half 0.05.
    np.testing.assert_allclose(sr.constant_kelly_long(3, 0.55, 1.0, KELLY), [0.05] * 3)
    assert sr.constant_kelly_long(2, 0.45, 1.0, KELLY).tolist() == [0.0, 0.0]


# -- look-ahead ----------------------------------------------------------------------------------


def test_a_look_ahead_signal_is_caught_by_shifting_it() -> None:
    """A signal that saw the return it is scored on looks wonderful and is worthless a bar late;
    an honest (weak, causal) one is not flagged."""
    rng = np.random.default_rng(8)
    n = 1500
    noise = rng.normal(0.0, 0.01, n + 1)
    returns = np.empty(n + 1)
    returns[0] = noise[0]
    for i in range(1, n + 1):  # AR(1) with a small coefficient: a little real predictability
        returns[i] = 0.05 * returns[i - 1] + noise[i]
    next_return = returns[1:]  # next_return[t] runs from bar t to bar t + 1
    honest = returns[:-1]  # the return that ended at bar t: known at t
    leak = next_return + rng.normal(0.0, 0.01, n)  # built from the future

    decay = sr.ic_decay(leak, next_return, 2)
    assert decay[0] > 0.5 and abs(decay[1]) < 0.1 and abs(decay[2]) < 0.1
    assert sr.lookahead_suspected(leak, next_return)
    assert not sr.lookahead_suspected(honest, next_return)
    p_leak = 0.5 + 0.1 * np.tanh(leak / 0.01)
    sized = sr.kelly_positions(p_leak, 1.0, KELLY)
    assert sr.strategy_report(sized, next_return).sharpe > 5
    # The same positions acted on a bar late earn nothing special.
    late = sr.strategy_report(sized[:-1], next_return[1:])
    assert abs(late.sharpe) < 3 * late.sharpe_se


def test_training_alignment_catches_a_feature_read_one_bar_ahead(sp500: MarketData) -> None:
    """On the real samples: the causal one-bar return at t is an honest signal; the same feature
    read at t + 1 is the return being predicted, and the report's IC shows the leak."""
    data = sp500.slice(0, 900)
    ds = Dataset.build(data, TINY.window)
    index = np.arange(ds.first_sample, len(data) - 2, dtype=np.intp)
    column = F.FEATURE_NAMES.index("log_return_1")
    honest = 0.5 + np.tanh(ds.features[index, column] * 10) / 4
    leaky = 0.5 + np.tanh(ds.features[index + 1, column] * 10) / 4
    component = KellyComponent(payoff_ratio=1.0)
    config = load_config(env={})
    for p, suspected in ((honest, False), (leaky, True)):
        f = ds.forecasts(index, p, p)
        fused = next(r for r in signal_reports(f, component, config, None) if r.name == "lstm")
        assert sr.lookahead_suspected(p - 0.5, f.returns) is suspected
        assert (fused.ic.spearman > 0.9) is suspected


# -- where the figures show ----------------------------------------------------------------------


def test_training_prints_the_signal_tables(trained: Trained) -> None:
    report = trained.report
    for line in ("buy and hold", "Kelly long", "lstm", "ensemble", "average (fused)", "fused + "):
        assert line in report.signals
    assert "Sharpe" in report.signals and "max DD" in report.signals
    assert "2006" in report.ic_years  # the tiny models' test year
    metrics = report.manifests["kelly"].metrics
    assert 0.4 < metrics["train_up_rate"] < 0.6 and metrics["train_long_payoff_ratio"] > 0


def test_evaluation_of_the_deployed_set_matches_training(
    trained: Trained, sp500: MarketData
) -> None:
    """Run through the registry on the training series' own test span, the evaluation reproduces
    the training report's scores; on another series it prints every table."""
    config = trained.config()
    open_database(config.storage.database_url)
    repository = ModelRepository(config.storage.model_repository)
    deployed = DeployedSet.load(repository)
    end = int(sp500.times.searchsorted(np.datetime64(TRAIN_END)))
    f = forecasts(deployed, sp500.slice(0, end)).since(TINY.test_start)
    lstm_test = trained.report.manifests["lstm"].metrics
    from export.evaluation import score

    assert score(f.p_lstm, f.y)["log_loss"] == pytest.approx(lstm_test["test_log_loss"], abs=1e-6)
    other = sp500.slice(end - 200, end + 300)
    text = evaluate(repository, config, [MarketData("OTHER", other.times, other.ohlcv)])
    assert "OTHER:" in text and "buy and hold" in text and "Pooled, bars from" in text


def test_retraining_gate_reports_the_signal(trained: Trained, sp500: MarketData) -> None:
    config = trained.config()
    open_database(config.storage.database_url)
    repository = ModelRepository(config.storage.model_repository)
    version = repository.deployed()["ensemble"]
    end = int(sp500.times.searchsorted(np.datetime64("2007-06-01")))
    ds = Dataset.build(sp500.slice(0, end), TINY.window)
    index = np.arange(end - 101, end - 1, dtype=np.intp)
    holdout = retrain_worker.Holdout(
        "ensemble", ds.y[index], x=ds.rows(index), returns=ds.returns[index]
    )
    expected = retrain_worker.version_probabilities(
        repository, "ensemble", version, holdout, config
    )
    result = retrain_worker.gate(
        repository, "ensemble", version, version, holdout, expected, config
    )
    rows = {str(r["name"]): r for r in result.metrics}
    for name in retrain_worker.SIGNAL_ROWS:
        assert rows[name]["champion"] == rows[name]["challenger"]
    positions = sr.kelly_positions(expected, 1.0, config.kelly)
    want = sr.strategy_report(positions, ds.returns[index]).sharpe
    assert rows["sharpe"]["challenger"] == pytest.approx(want)


def test_replay_summary_prints_return_sharpe_drawdown_and_ic() -> None:
    summary = ReplaySummary()
    rng = np.random.default_rng(9)
    p = 0.5 + rng.normal(0, 0.05, 40)
    r = rng.normal(0, 0.01, 40)
    for i in range(41):
        response = inference_pb2.StreamResponse(symbol="X")
        response.bar_time.seconds = 1_600_000_000 + 86_400 * i
        if i > 0:
            prev = i - 1
            up = p[prev] >= 0.5
            response.resolved.prediction_id = f"id{prev}"
            response.resolved.realized_return = r[prev]
            response.resolved.position_return = 0.1 * (1 if up else -1) * r[prev]
        if i < 40:
            response.prediction.prediction_id = f"id{i}"
            response.prediction.probability_up = p[i]
            response.prediction.kelly_fraction = 0.1
            response.prediction.direction = (
                common_pb2.DIRECTION_UP if p[i] >= 0.5 else common_pb2.DIRECTION_DOWN
            )
        summary.update(response)
    report = summary.signal()
    assert report is not None
    assert report.ic.spearman == pytest.approx(stats.spearmanr(p, r).statistic)
    assert report.strategy.total_return == pytest.approx(summary.kelly_equity - 1)
    text = summary.table()
    for line in ("Kelly Sharpe", "Kelly max drawdown", "IC Spearman", "buy-and-hold Sharpe"):
        assert line in text


def test_signal_reports_cover_every_strategy() -> None:
    n = 30
    rng = np.random.default_rng(10)
    t = np.arange(n).astype("datetime64[D]").astype("datetime64[s]")
    f = SpanForecasts(
        "X",
        0.5 + rng.normal(0, 0.02, n),
        0.5 + rng.normal(0, 0.02, n),
        rng.integers(0, 2, n).astype(float),
        rng.normal(0, 0.01, n),
        t,
        (np.arange(n) + 1).astype("datetime64[D]").astype("datetime64[s]"),
    )
    from export.evaluation import Baseline

    names = [
        r.name
        for r in signal_reports(
            f, KellyComponent(method="identity"), load_config(env={}), Baseline(0.55, 1.0)
        )
    ]
    assert names == [
        "buy and hold",
        "0.5 Kelly long (p 0.550)",
        "lstm",
        "ensemble",
        "average (fused)",
        "fused + identity",
    ]
