"""The one-run serving graph: its features equal server/core/features.py (the reference) on the whole
built-in series and on random bars with the reference's edge cases; a set trained together scores
through it with the same results as by its parts; it is used only for exactly the pair it was built
for, so a retrained counterpart, a rollback or a tampered file falls back to the parts."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from export import serving_graph as SG
from export.data import MarketData
from export.feature_graph import (
    BAR_CHECK,
    BARS,
    FEATURES,
    FeatureGraphError,
    check_bar_rule,
    check_feature_parity,
    export_feature_graph,
    planted_defects,
    random_bars,
)
from export.train import publish_set
from server.core import features as F
from server.core.bars import CLOSE, HIGH, LOW, VOLUME
from server.core.errors import InvalidArgument
from server.core.manifest import KINDS, Manifest
from server.serving import models as M
from server.serving.dataplane import DataPlane
from server.serving.models import BarsRefused, ModelHolder, ModelSet, Scored, load_model_set
from server.serving.validation import window_of
from server.storage.registry import ModelRepository
from server.storage.schema import open_database
from server.storage.writer import BatchWriter
from tests.conftest import Trained, deployed_as_fitted
from tests.tiny_models import TINY

FloatArray = npt.NDArray[np.float64]


def _windows(data: MarketData, window: int) -> FloatArray:
    need = F.bars_required(window)
    return np.ascontiguousarray(sliding_window_view(data.ohlcv, (need, 5))[:, 0])


def _feature_run(window: int) -> Callable[[FloatArray], FloatArray]:
    session = M._session(export_feature_graph(window))

    def run(bars: FloatArray) -> FloatArray:
        out: FloatArray = session.run([FEATURES], {BARS: bars})[0]
        return out

    return run


@pytest.mark.parametrize("window", [TINY.window, 20])
def test_feature_graph_equals_numpy_on_the_whole_sp500(sp500: MarketData, window: int) -> None:
    run = _feature_run(window)
    windows = _windows(sp500, window)
    assert len(windows) == len(sp500) - F.bars_required(window) + 1
    diff = check_feature_parity(run, windows, window)
    assert diff <= 1e-6
    # one window at a time, as a unary Predict sends it
    for i in (0, len(windows) // 2, len(windows) - 1):
        check_feature_parity(run, windows[i : i + 1], window)


@pytest.mark.parametrize("window", [TINY.window, 20])
def test_feature_graph_equals_numpy_on_random_bars_and_edge_cases(window: int) -> None:
    run = _feature_run(window)
    need = F.bars_required(window)
    windows = random_bars(np.random.default_rng(11), 800, need)
    k = len(windows) // 8
    reference = F.window_features_batch(windows, window)
    # The edge cases are there: zero spread, flat closes (zero gains and losses), zero volume.
    names = F.FEATURE_NAMES
    assert np.all(windows[:k, :, HIGH] == windows[:k, :, LOW])
    assert np.all(reference[:k, :, names.index("close_location")] == 0.0)
    assert np.all(reference[k : 2 * k, -1, names.index("rsi_14")] == 0.0)
    assert np.all(reference[k : 2 * k, -1, names.index("volatility_20")] == 0.0)
    assert np.all(windows[2 * k : 3 * k, :, VOLUME] == 0.0)
    got = run(windows)
    assert np.max(np.abs(got - reference)) <= 1e-6
    # where the reference gives exact values, so does the graph
    assert np.all(got[:k, :, names.index("close_location")] == 0.0)
    assert np.all(got[k : 2 * k, -1, names.index("rsi_14")] == 0.0)
    assert np.all(got[k : 2 * k, -1, names.index("volatility_20")] == 0.0)
    assert np.isfinite(got).all()


def test_feature_parity_check_catches_a_difference(sp500: MarketData) -> None:
    run = _feature_run(TINY.window)
    windows = _windows(sp500, TINY.window)[:50]

    def off(bars: FloatArray) -> FloatArray:
        out: FloatArray = run(bars)
        out[-1, -1, 3] += 1e-5
        return out

    with pytest.raises(FeatureGraphError):
        check_feature_parity(off, windows, TINY.window)


def test_the_graph_checks_bars_by_the_rule_of_bars_py() -> None:
    """The graph's bar check refuses exactly the windows server/core/bars.py refuses, over
    windows with every kind of defect planted; a planted disagreement is caught."""
    window = TINY.window
    session = M._session(export_feature_graph(window))

    def run(bars: FloatArray) -> FloatArray:
        out: FloatArray = session.run([BAR_CHECK], {BARS: bars})[0]
        return out

    windows = planted_defects(np.random.default_rng(3), 2000, F.bars_required(window))
    refused = check_bar_rule(run, windows)
    assert 500 < refused < 1500  # both verdicts are well represented
    for i in range(20):  # one window at a time, as a unary Predict sends it
        check_bar_rule(run, windows[i : i + 1])

    def flipped(bars: FloatArray) -> FloatArray:
        out = run(bars).copy()
        out[7] = 1.0 if out[7] < 0 or np.isnan(out[7]) else -1.0
        return out

    with pytest.raises(FeatureGraphError):
        check_bar_rule(flipped, windows)


def test_predict_lets_the_graph_check_the_bars(trained: Trained, sp500: MarketData) -> None:
    """With a graph that checks bars, Predict checks none in numpy first: a bad bar is refused
    with the field named as before, and so is a window of valid but huge values, which would
    score NaN."""
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    config = trained.config()
    holder = ModelHolder(repository, config)
    assert holder.reload()
    plane = DataPlane(config, holder, BatchWriter(1.0, 1, enabled=False))
    models = holder.current
    assert models.checks_bars
    need = models.bars_required
    times = sp500.times[-need:].astype("datetime64[s]").astype(np.int64)
    bars = sp500.ohlcv[-need:].copy()
    bad = bars.copy()
    bad[need - 3, CLOSE] = np.nan
    with pytest.raises(InvalidArgument) as refused:
        plane.predict("SPX", times, bad, "bars")
    assert refused.value.field == f"bars[{need - 3}].close"
    huge = bars.copy()
    huge[:2, VOLUME] = 1e308  # each valid, but their sum overflows: the features would be NaN
    with pytest.raises(BarsRefused):
        models.score(huge[None], check_bars=True)
    with pytest.raises(InvalidArgument) as refused:
        plane.predict("SPX", times, huge, "bars")
    assert refused.value.field == "bars" and "overflows" in str(refused.value)
    got = plane.predict("SPX", times, bars, "bars")
    assert got.probability_up == models.score(bars[None]).fused.probability_up[0]


def test_the_server_reads_the_names_the_export_writes() -> None:
    assert (M.SERVING_FILE, M.SERVING_INFO) == (SG.FILE, SG.INFO_KEY)
    assert (M.BARS, M.P_LSTM, M.P_ENSEMBLE) == (BARS, SG.P_LSTM, SG.P_ENSEMBLE)
    assert M.BAR_CHECK == BAR_CHECK
    assert (M.INPUT, M.LSTM_OUTPUT, M.ENSEMBLE_OUTPUT) == (
        SG.MODEL_INPUT,
        SG.LSTM_OUTPUT,
        SG.ENSEMBLE_OUTPUT,
    )


def _loaded(repository: ModelRepository, trained: Trained) -> ModelSet:
    return load_model_set(repository, repository.deployed(), trained.config())


def _by_parts(models: ModelSet, repository: ModelRepository, trained: Trained) -> ModelSet:
    """The same deployed set, scoring by its parts (no serving graph)."""
    payloads = {k: repository.load_verified(k, v)[1] for k, v in models.versions.items()}
    return ModelSet(models.manifests, payloads, trained.config())


def _assert_same(a: Scored, b: Scored) -> None:
    tol = 1e-6
    assert np.max(np.abs(a.p_lstm - b.p_lstm)) <= tol
    assert np.max(np.abs(a.p_ensemble - b.p_ensemble)) <= tol
    for name in ("probability_up", "confidence", "agreement"):
        assert np.max(np.abs(getattr(a.fused, name) - getattr(b.fused, name))) <= tol, name
    assert np.array_equal(a.fused.direction, b.fused.direction)
    assert np.array_equal(a.fused.agree, b.fused.agree)
    assert np.max(np.abs(a.kelly_fraction - b.kelly_fraction)) <= tol


def test_a_trained_set_scores_in_one_run_as_by_its_parts(
    trained: Trained, sp500: MarketData
) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    lstm_version = repository.deployed()["lstm"]
    assert (repository.directory("lstm", lstm_version) / SG.FILE).is_file()
    graph = _loaded(repository, trained)
    parts = _by_parts(graph, repository, trained)
    assert graph.one_run and not parts.one_run and graph.versions == parts.versions
    windows = _windows(sp500, graph.window)
    _assert_same(graph.score(windows), parts.score(windows))  # the whole series in one batch
    for batch in (1, 64):
        chunk = windows[1000 : 1000 + batch]
        _assert_same(graph.score(chunk), parts.score(chunk))
    # a request with more bars than needed uses the last bars_required of them
    longer = sp500.ohlcv[None, 900 : 1000 + graph.bars_required]
    _assert_same(graph.score(longer), parts.score(longer))


def test_one_window_scores_as_its_row_of_a_batch(trained: Trained, sp500: MarketData) -> None:
    """Unary Predict scores its window with score_one (fusion and Kelly on floats); a batch's
    rows must carry the same values, through the graph and by the parts (to float32's precision:
    the tree ensemble sums in another order at another batch size)."""
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    graph = _loaded(repository, trained)
    parts = _by_parts(graph, repository, trained)
    windows = _windows(sp500, graph.window)[2000:2040]
    for models in (graph, parts):
        batch = models.score(windows)
        fused = batch.fused
        for i, window in enumerate(windows):
            one = models.score_one(window)
            assert isinstance(one.fused.direction, int)
            assert one.fused.direction == fused.direction[i] and one.fused.agree == fused.agree[i]
            got = (one.p_lstm, one.p_ensemble, one.kelly_fraction, *one.fused[:3])
            want = (
                batch.p_lstm[i],
                batch.p_ensemble[i],
                batch.kelly_fraction[i],
                fused.probability_up[i],
                fused.confidence[i],
                fused.agreement[i],
            )
            assert np.allclose(got, want, rtol=0, atol=1e-6), (got, want)


def _republished(
    repository: ModelRepository, kind: str, version: str, *, with_graph: bool
) -> Manifest:
    """The deployed ``kind`` again under ``version`` (as a retrained challenger would be),
    deployed; with the serving graph for the deployed counterpart when ``with_graph``."""
    manifest, payload = repository.load_verified(kind, repository.deployed()[kind])
    info = {k: v for k, v in manifest.info.items() if k != SG.INFO_KEY}
    graph = (
        SG.graph_for_challenger(repository, kind, version, payload, manifest.feature_spec)
        if with_graph
        else None
    )
    published = repository.publish(
        kind,
        payload,
        file=manifest.file,
        feature_spec=manifest.feature_spec,
        info=info if graph is None else graph.info_for(kind, info),
        version=version,
    )
    if graph is not None:
        graph.write(repository)
    repository.deploy(kind, version)
    return published


def test_a_counterpart_deployed_alone_falls_back_to_the_parts(
    trained: Trained, sp500: MarketData
) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    before = _loaded(repository, trained)
    assert before.one_run
    # an ensemble retrained without a graph: the LSTM's graph names the old ensemble
    _republished(repository, "ensemble", "ensemble-alone", with_graph=False)
    models = _loaded(repository, trained)
    assert models.versions["ensemble"] == "ensemble-alone" and not models.one_run
    windows = _windows(sp500, models.window)[2000:2064]
    _assert_same(models.score(windows), before.score(windows))  # same bytes, other path
    # a retraining job builds the graph for its challenger and the deployed LSTM
    _republished(repository, "ensemble", "ensemble-paired", with_graph=True)
    models = _loaded(repository, trained)
    assert models.versions["ensemble"] == "ensemble-paired" and models.one_run
    _assert_same(models.score(windows), before.score(windows))
    # a rollback to the first pair finds the LSTM's graph valid again
    repository.deploy("ensemble", before.versions["ensemble"])
    assert _loaded(repository, trained).one_run


def test_a_retrained_lstm_carries_its_graph(trained: Trained) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    _republished(repository, "lstm", "lstm-retrained", with_graph=True)
    models = _loaded(repository, trained)
    assert models.versions["lstm"] == "lstm-retrained" and models.one_run


def test_a_tampered_or_missing_graph_falls_back(
    trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    path = repository.directory("lstm", repository.deployed()["lstm"]) / SG.FILE
    payload = path.read_bytes()
    path.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    with caplog.at_level(logging.ERROR, logger="minhos.inference"):
        models = _loaded(repository, trained)
    assert not models.one_run
    assert "does not match its SHA-256" in caplog.text
    path.unlink()
    assert not _loaded(repository, trained).one_run
    path.write_bytes(payload)
    assert _loaded(repository, trained).one_run


def test_a_graph_for_other_bars_is_not_run(trained: Trained) -> None:
    """A graph whose input is not this set's window (a wrong build) is refused at load."""
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    versions = repository.deployed()
    payloads = {k: repository.load_verified(k, v)[1] for k, v in versions.items()}
    manifests = {k: repository.load_verified(k, v)[0] for k, v in versions.items()}
    other = SG.compose_serving_graph(payloads["lstm"], payloads["ensemble"], TINY.window + 1)
    assert not ModelSet(manifests, payloads, trained.config(), other).one_run


def test_a_swap_loads_the_new_sets_graph_as_one_unit(trained: Trained) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    holder = ModelHolder(repository, trained.config())
    assert holder.reload() and holder.current.one_run
    first = holder.current
    publish_set(
        repository, deployed_as_fitted(repository), {k: f"next-{k}" for k in KINDS}, deploy=True
    )
    assert holder.reload()
    second = holder.current
    assert second is not first and second.one_run and first.one_run
    assert second.versions == {k: f"next-{k}" for k in KINDS}
    bars = np.ones((1, second.bars_required, 5)) * np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    bars[0, :, CLOSE] = np.linspace(1.0, 2.0, second.bars_required)
    bars[0, :, HIGH] = bars[0, :, CLOSE] * 1.01
    _assert_same(second.score(bars), first.score(bars))


def test_without_the_graph_numpy_refuses_the_same_windows() -> None:
    """A set scored by its parts (no graph, or an older one) checks bars in numpy first, by the
    same rule, the overflowing sum included."""
    need = F.bars_required(TINY.window)
    windows = planted_defects(np.random.default_rng(4), 300, need)
    windows[0, :2, VOLUME] = 1e308
    times = np.arange(1, need + 1, dtype=np.int64) * 86_400

    def verdicts(batch: FloatArray) -> FloatArray:
        """The numpy check's verdict in the graph's terms: >= 0 accepted, < 0 refused."""
        out = []
        for bars in batch:
            try:
                window_of(times, bars, need, TINY.window, "bars")
                out.append(0.0)
            except InvalidArgument:
                out.append(-1.0)
        return np.array(out)

    assert check_bar_rule(verdicts, windows) > 100
