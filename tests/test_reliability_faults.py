"""Faults against real server processes and real databases (issue 11): kill -9 mid-stream and a
restart, model files that must be refused while the serving set stays, and a database locked or
gone for a while. SIGTERM's drain is tests/test_serve_process.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.client import MinhosClient, bars_from_arrays
from export.data import MarketData
from minhos.v1 import inference_pb2
from server.core.manifest import Manifest
from server.storage.registry import MANIFEST, ModelRepository
from server.storage.schema import close_database, database, open_database
from tests.conftest import Trained, register_in
from tests.postgres_cluster import need_postgres, postgres_cluster
from tests.reliability_record import record
from tests.server_harness import live_index, window
from tests.server_process import ServerProcess, serving, spawn

#: The flush interval the kill test runs with (the default of storage.batch_interval_s).
INTERVAL_S = 0.2
#: A kill loses the rows queued since the last write began (one interval) and that write, if it
#: had not committed: acknowledgements older than interval + this before the kill must be stored.
WRITE_SLACK_S = 0.1


def base_settings(trained: Trained, **extra: str) -> dict[str, str]:
    return {
        "MINHOS_STORAGE_DATABASE_URL": trained.database_url,
        "MINHOS_STORAGE_MODEL_REPOSITORY": str(trained.root / "models"),
        "MINHOS_STORAGE_BATCH_INTERVAL_S": str(INTERVAL_S),
        **extra,
    }


def stored_ids(db: Path) -> tuple[set[str], set[str]]:
    """Prediction ids and resolved prediction ids in a SQLite database (read by SQLite itself,
    which also recovers the write-ahead log a killed process left)."""
    with sqlite3.connect(db) as raw:
        predictions = {r[0] for r in raw.execute("SELECT id FROM prediction_row")}
        outcomes = {r[0] for r in raw.execute("SELECT prediction_id FROM outcome_row")}
    return predictions, outcomes


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as raw:
        return str(raw.execute("PRAGMA integrity_check").fetchone()[0])


class Acks:
    """What a client saw acknowledged, with the (monotonic) time it saw it."""

    def __init__(self) -> None:
        self.predictions: list[tuple[float, str]] = []
        self.outcomes: list[tuple[float, str]] = []
        self.errors: list[str] = []

    def lost(self, stored: set[str], kind: str) -> list[tuple[float, str]]:
        acks = self.predictions if kind == "predictions" else self.outcomes
        return [(t, pid) for t, pid in acks if pid not in stored]


def stream_requests(data: MarketData, start: int) -> Iterator[inference_pb2.StreamRequest]:
    """The live bars from ``start``, again and again under a new symbol each round (a symbol's
    bars must move forward in time); bounded."""
    bars = bars_from_arrays(data.times[start:], data.ohlcv[start:])
    for round_ in range(50):
        for bar in bars:
            yield inference_pb2.StreamRequest(symbol=f"KILL{round_}", bar=bar)


def unary_loop(
    target: str,
    data: MarketData,
    need: int,
    acks: Acks,
    stop: threading.Event,
    keep_going: bool = False,
) -> None:
    """Predict then RecordOutcome, back to back, until ``stop``, or the first error unless
    ``keep_going`` (errors are recorded by method and code)."""
    end = live_index(data)
    with MinhosClient(target, max_attempts=1, timeout=5) as client:
        for i in range(100_000):
            if stop.is_set():
                return
            method = "Predict"
            try:
                reply = client.predict("UNARY", window(data, end + i % 2000, need))
                acks.predictions.append((time.monotonic(), reply.prediction_id))
                method = "RecordOutcome"
                client.record_outcome(reply.prediction_id, 0.001 * (i % 7 - 3))
                acks.outcomes.append((time.monotonic(), reply.prediction_id))
            except grpc.RpcError as exc:
                acks.errors.append(f"{method} {exc.code().name}")
                if not keep_going:
                    return
                time.sleep(0.05)


@pytest.mark.serving
def test_kill_9_mid_stream_loses_at_most_one_interval(
    trained: Trained, sp500: MarketData, tmp_path: Path
) -> None:
    db = trained.root / "minhos.db"
    server = spawn(base_settings(trained), tmp_path / "server.log")
    acks = Acks()
    stop = threading.Event()
    try:
        server.wait_serving()
        with MinhosClient(server.target, max_attempts=1) as client:
            need = client.serving_info().bars_required
            unary = threading.Thread(
                target=unary_loop, args=(server.target, sp500, need, acks, stop), daemon=True
            )
            killed_at = [0.0]

            def kill() -> None:
                time.sleep(1.5)
                killed_at[0] = time.monotonic()
                os.kill(server.process.pid, signal.SIGKILL)

            killer = threading.Thread(target=kill, daemon=True)
            unary.start()
            killer.start()
            ended = "completed"
            try:
                requests = stream_requests(sp500, live_index(sp500) - need)
                for reply in client.predict_stream(requests, timeout=30):
                    now = time.monotonic()
                    if reply.HasField("prediction"):
                        acks.predictions.append((now, reply.prediction.prediction_id))
                    if reply.HasField("resolved"):
                        acks.outcomes.append((now, reply.resolved.prediction_id))
            except grpc.RpcError as exc:
                ended = exc.code().name
            killer.join(5)
            stop.set()
            unary.join(10)
        assert server.process.wait(10) == -signal.SIGKILL
    finally:
        stop.set()
        if server.process.poll() is None:
            server.process.kill()
    assert ended == "UNAVAILABLE", f"the stream was not cut by the kill: {ended}"
    kill_time = killed_at[0]
    checked = integrity(db)
    assert checked == "ok"
    predictions, outcomes = stored_ids(db)
    lost_p = acks.lost(predictions, "predictions")
    lost_o = acks.lost(outcomes, "outcomes")
    cutoff = kill_time - INTERVAL_S - WRITE_SLACK_S
    assert not [a for a in lost_p if a[0] < cutoff], "predictions lost beyond one interval"
    assert not [a for a in lost_o if a[0] < cutoff], "outcomes lost beyond one interval"
    oldest = max((kill_time - t for t, _ in lost_p + lost_o), default=0.0)
    assert len(acks.predictions) > 100 and len(acks.outcomes) > 50  # it was busy when killed

    restarted = spawn(base_settings(trained), tmp_path / "restart.log")
    try:
        ready_s = restarted.wait_serving()
        with MinhosClient(restarted.target, max_attempts=1) as client:
            end = live_index(sp500)
            after = client.predict("AFTER", window(sp500, end, client.serving_info().bars_required))
            assert client.record_outcome(after.prediction_id, 0.01).outcome.prediction_id
        assert restarted.stop() == 0
    finally:
        if restarted.process.poll() is None:
            restarted.process.kill()
    record(
        "kill -9 mid-stream, restart",
        "acknowledged rows stored unless acknowledged within one flush interval (0.2 s) of the "
        "kill; PRAGMA integrity_check; restart serves",
        f"{len(acks.predictions):,} predictions / {len(acks.outcomes):,} outcomes acknowledged, "
        f"{len(lost_p)} / {len(lost_o)} lost, the oldest {oldest * 1e3:.0f} ms before the kill; "
        f"integrity {checked}; SERVING again in {ready_s:.1f} s",
    )


# -- model files -------------------------------------------------------------------------------


class Predicting:
    """Predict in a loop on its own thread: the versions that answered, and any error."""

    def __init__(self, target: str, data: MarketData, need: int) -> None:
        self.versions: set[tuple[str, str, str]] = set()
        self.errors: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(target, data, need), daemon=True)
        self._thread.start()

    def _run(self, target: str, data: MarketData, need: int) -> None:
        end = live_index(data)
        with MinhosClient(target, max_attempts=1, timeout=5) as client:
            for i in range(1_000_000):
                if self._stop.wait(0.01):
                    return
                try:
                    r = client.predict("SPX", window(data, end + i % 1000, need))
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                self.versions.add((r.lstm.version, r.ensemble.version, r.kelly_version))
                self.calls += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _copy(
    repo: ModelRepository, kind: str, version: str, feature_names: tuple[str, ...] = ()
) -> tuple[Manifest, bytes]:
    """A deployed version's manifest and bytes, its feature names replaced if given."""
    manifest, payload = repo.load_verified(kind, version)
    if feature_names:
        spec = dataclasses.replace(manifest.feature_spec, feature_names=feature_names)
        manifest = dataclasses.replace(manifest, feature_spec=spec)
    return manifest, payload


def _publish(repo: ModelRepository, manifest: Manifest, payload: bytes, deploy: bool = True) -> str:
    return repo.publish(
        manifest.kind,
        payload,
        file=manifest.file,
        feature_spec=manifest.feature_spec,
        metrics=manifest.metrics,
        info=manifest.info,
        deploy=deploy,
    ).version


def corrupt(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    manifest, payload = _copy(repo, "lstm", good["lstm"])
    noise = np.random.default_rng(5).integers(0, 256, len(payload), dtype=np.uint8).tobytes()
    return [_publish(repo, manifest, noise)]


def truncated(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    manifest, payload = _copy(repo, "ensemble", good["ensemble"])
    return [_publish(repo, manifest, payload[: len(payload) // 2])]


def tampered(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    """A registered file changed on disk afterwards (one byte)."""
    manifest, payload = _copy(repo, "lstm", good["lstm"])
    version = _publish(repo, manifest, payload, deploy=False)
    path = repo.directory("lstm", version) / manifest.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    repo.deploy("lstm", version)
    return [version]


def wrong_sha(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    """A manifest whose SHA-256 is not the file's (nor the registry's)."""
    manifest, payload = _copy(repo, "ensemble", good["ensemble"])
    version = _publish(repo, manifest, payload, deploy=False)
    path = repo.directory("ensemble", version) / MANIFEST
    raw = json.loads(path.read_text())
    raw["sha256"] = "0" * 64
    path.write_text(json.dumps(raw))
    repo.deploy("ensemble", version)
    return [version]


def missing(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    manifest, payload = _copy(repo, "lstm", good["lstm"])
    version = _publish(repo, manifest, payload, deploy=False)
    (repo.directory("lstm", version) / manifest.file).unlink()
    repo.deploy("lstm", version)
    return [version]


def features_of_another_model(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    """An ensemble whose manifest lists other features than the deployed LSTM's."""
    names = _copy(repo, "ensemble", good["ensemble"])[0].feature_spec.feature_names
    manifest, payload = _copy(repo, "ensemble", good["ensemble"], feature_names=names[::-1])
    return [_publish(repo, manifest, payload)]


def features_the_server_does_not_compute(repo: ModelRepository, good: dict[str, str]) -> list[str]:
    """Both models' manifests list features in an order (and under names) the server does not
    compute: the pair agrees, but the server would feed them the wrong columns."""
    versions = {}
    for kind in ("lstm", "ensemble"):
        names = _copy(repo, kind, good[kind])[0].feature_spec.feature_names
        manifest, payload = _copy(repo, kind, good[kind], feature_names=names[::-1])
        versions[kind] = _publish(repo, manifest, payload, deploy=False)
    repo.deploy_set(versions)
    return list(versions.values())


BAD_MODELS: dict[str, tuple[Callable[[ModelRepository, dict[str, str]], list[str]], str]] = {
    "corrupt ONNX file": (corrupt, ""),
    "truncated ONNX file": (truncated, ""),
    "file tampered after registration": (tampered, "SHA-256"),
    "manifest with a wrong SHA-256": (wrong_sha, "SHA-256"),
    "model file missing": (missing, "No such file"),
    "manifest for other features than its partner's": (
        features_of_another_model,
        "different features",
    ),
}


def _refused(server: ServerProcess, offset: int, timeout: float = 5.0) -> str:
    """The first log message after ``offset`` saying the deployed models cannot be loaded ("" if
    none came within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log_text()[offset:].splitlines():
            try:
                message = str(json.loads(line).get("message", ""))
            except ValueError:
                continue
            if "cannot load deployed models" in message:
                return message
        time.sleep(0.05)
    return ""


def _refuse_each(
    server: ServerProcess, repo: ModelRepository, good: dict[str, str]
) -> dict[str, tuple[list[str], str]]:
    """Deploys each bad model in turn, waits for its refusal, and deploys the good set again;
    the bad versions and the refusal message of each."""
    refusals = {}
    for name, (make_bad, expected) in BAD_MODELS.items():
        offset = len(server.log_text())
        versions = make_bad(repo, good)
        message = _refused(server, offset)
        assert message, f"{name}: {versions} not refused in the server log"
        assert expected in message, f"{name}: {message}"
        refusals[name] = (versions, message)
        time.sleep(0.3)  # a few more reload polls: still refused, still the old set
        repo.deploy_set(good)
        _quiet(server)
    return refusals


def _quiet(server: ServerProcess, seconds: float = 0.5) -> None:
    """Waits until the server's log has not grown for ``seconds`` (a reload started before the
    good set was deployed again has logged its refusal), bounded."""
    for _ in range(20):
        size = len(server.log_text())
        time.sleep(seconds)
        if len(server.log_text()) == size:
            return


@pytest.fixture
def model_server(
    trained: Trained, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ModelRepository]]:
    settings = base_settings(trained, MINHOS_SERVER_RELOAD_INTERVAL_S="0.1")
    with serving(settings, tmp_path / "server.log") as server:
        open_database(trained.database_url)
        try:
            yield server, ModelRepository(trained.root / "models")
        finally:
            close_database()
        assert server.stop() == 0


@pytest.mark.serving
def test_bad_model_files_are_refused_and_the_serving_set_stays(
    model_server: tuple[ServerProcess, ModelRepository], sp500: MarketData
) -> None:
    server, repo = model_server
    good = repo.deployed()
    with MinhosClient(server.target) as client:
        need = client.serving_info().bars_required
    predicting = Predicting(server.target, sp500, need)
    try:
        refusals = _refuse_each(server, repo, good)
    finally:
        predicting.stop()
    assert predicting.errors == []
    assert predicting.versions == {(good["lstm"], good["ensemble"], good["kelly"])}
    assert predicting.calls > 20
    assert server.health() == "SERVING"
    record(
        "bad model files deployed (" + ", ".join(BAD_MODELS) + ")",
        "each refused with an error naming the version; Predict keeps answering with the "
        "serving set",
        f"{len(refusals)}/{len(BAD_MODELS)} refused; {predicting.calls} Predicts during, "
        f"{len(predicting.errors)} errors, only the old versions answered",
    )


@pytest.mark.serving
def test_a_refusal_names_the_model_version(
    model_server: tuple[ServerProcess, ModelRepository],
) -> None:
    """onnxruntime's own errors (corrupt, truncated file) and a feature mismatch name no model:
    the refusal must say which kind and version it refused."""
    server, repo = model_server
    refusals = _refuse_each(server, repo, repo.deployed())
    unnamed = {
        name: message
        for name, (versions, message) in refusals.items()
        if not all(v in message for v in versions)
    }
    assert not unnamed


@pytest.mark.serving
def test_a_model_set_for_other_features_is_refused(
    model_server: tuple[ServerProcess, ModelRepository], sp500: MarketData
) -> None:
    """A pair whose manifests agree with each other but not with the features the server computes
    (server.core.features.FEATURE_NAMES) would be fed the wrong columns: refused."""
    server, repo = model_server
    good = repo.deployed()
    with MinhosClient(server.target) as client:
        need = client.serving_info().bars_required
    predicting = Predicting(server.target, sp500, need)
    try:
        offset = len(server.log_text())
        versions = features_the_server_does_not_compute(repo, good)
        message = _refused(server, offset, timeout=3.0)
        repo.deploy_set(good)
        time.sleep(0.3)
    finally:
        predicting.stop()
    assert message, f"{versions} were loaded, not refused"
    assert predicting.versions == {(good["lstm"], good["ensemble"], good["kelly"])}


@pytest.mark.serving
def test_a_refused_model_raises_an_alert(
    model_server: tuple[ServerProcess, ModelRepository],
) -> None:
    """A deployed version that cannot be loaded is an alert naming it, not only a log line."""
    server, repo = model_server
    good = repo.deployed()
    offset = len(server.log_text())
    versions = missing(repo, good)
    assert _refused(server, offset)
    repo.deploy_set(good)
    with MinhosClient(server.target) as client:
        alerts = client.alerts(include_acknowledged=True)
    assert any(versions[0] in a.message for a in alerts), alerts


# -- the database ----------------------------------------------------------------------------------


@pytest.mark.serving
def test_a_locked_database_delays_writes_and_loses_nothing(
    trained: Trained, sp500: MarketData, tmp_path: Path
) -> None:
    """Another process holds SQLite's write lock for 3 s while clients predict and record
    outcomes: every call is answered, and every acknowledged row is stored after the lock."""
    db = trained.root / "minhos.db"
    acks = Acks()
    stop = threading.Event()
    with serving(base_settings(trained), tmp_path / "server.log") as server:
        with MinhosClient(server.target) as client:
            need = client.serving_info().bars_required
        worker = threading.Thread(
            target=unary_loop, args=(server.target, sp500, need, acks, stop), daemon=True
        )
        worker.start()
        time.sleep(0.5)
        holder = sqlite3.connect(db, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        try:
            time.sleep(3.0)
            health_locked = server.health()
            during = sum(1 for t, _ in acks.predictions if t >= locked_at)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        time.sleep(0.5)
        stop.set()
        worker.join(10)
        assert server.stop() == 0
    assert acks.errors == []
    assert during > 20, "Predict stalled while the database was locked"
    predictions, outcomes = stored_ids(db)
    assert not acks.lost(predictions, "predictions") and not acks.lost(outcomes, "outcomes")
    record(
        "SQLite write lock held 3 s by another process",
        "calls answered during the lock; acknowledged rows stored after it",
        f"{during} Predict + RecordOutcome pairs answered while locked, 0 errors; "
        f"{len(acks.predictions)} predictions, {len(acks.outcomes)} outcomes, 0 lost; "
        f"health while locked: {health_locked}",
    )


@dataclasses.dataclass(frozen=True)
class Outage:
    acks: Acks
    #: Predictions answered while the database was down.
    answered_down: int
    health_down: set[str]
    #: What the inference service and the liveness name said meanwhile (what probes ask).
    inference_down: set[str]
    liveness_down: set[str]
    health_back: str
    back_s: float
    lost_predictions: int
    lost_outcomes: int


@pytest.fixture(scope="module")
def postgres_outage(
    trained_once: Trained, sp500: MarketData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    """PostgreSQL stopped for 3 s under Predict + RecordOutcome load on a real server process,
    then started again; run once for the tests below."""
    need_postgres()
    tmp = tmp_path_factory.mktemp("pg-outage")
    with postgres_cluster() as cluster:
        settings = {
            "MINHOS_STORAGE_DATABASE_URL": cluster.url,
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(
                register_in(cluster.url, trained_once, tmp / "models").root
            ),
            "MINHOS_SERVER_RELOAD_INTERVAL_S": "0.2",
        }
        acks = Acks()
        stop = threading.Event()
        with serving(settings, tmp / "server.log") as server:
            with MinhosClient(server.target) as client:
                need = client.serving_info().bars_required
            worker = threading.Thread(
                target=unary_loop, args=(server.target, sp500, need, acks, stop, True), daemon=True
            )
            worker.start()
            time.sleep(0.5)
            cluster.stop()
            down_at = time.monotonic()
            health_down, inference_down, liveness_down = set(), set(), set()
            while time.monotonic() - down_at < 3.0:
                health_down.add(server.health())
                inference_down.add(server.health(service="minhos.v1.InferenceService"))
                liveness_down.add(server.health(service="minhos.liveness"))
                time.sleep(0.2)
            answered_down = sum(1 for t, _ in acks.predictions if t >= down_at)
            cluster.start()
            up_at = time.monotonic()
            while server.health() != "SERVING" and time.monotonic() - up_at < 8:
                time.sleep(0.1)
            back_s = time.monotonic() - up_at
            health_back = server.health()
            time.sleep(0.5)
            stop.set()
            worker.join(10)
            assert server.stop() == 0, server.log_text()[-3000:]
        open_database(cluster.url)
        try:
            stored = {r[0] for r in database.execute_sql("SELECT id FROM prediction_row")}
            resolved = {r[0] for r in database.execute_sql("SELECT prediction_id FROM outcome_row")}
        finally:
            close_database()
    outage = Outage(
        acks,
        answered_down,
        health_down,
        inference_down,
        liveness_down,
        health_back,
        back_s,
        len(acks.lost(stored, "predictions")),
        len(acks.lost(resolved, "outcomes")),
    )
    record(
        "PostgreSQL stopped 3 s under load, then started",
        "Predict answers while it is down; acknowledged rows stored once it is back; health "
        "and RecordOutcome recover",
        f"{answered_down} Predicts answered while down; {outage.lost_predictions} of "
        f"{len(acks.predictions)} predictions and {outage.lost_outcomes} of "
        f"{len(acks.outcomes)} outcomes lost; health {sorted(health_down)} while down "
        f"(inference service {sorted(inference_down)}, liveness {sorted(liveness_down)}), "
        f"{health_back} {back_s:.0f} s after the restart; errors: "
        f"{', '.join(sorted(set(acks.errors))) or 'none'}",
    )
    yield outage


def test_postgres_gone_then_back_keeps_serving_and_loses_nothing(postgres_outage: Outage) -> None:
    assert postgres_outage.answered_down > 20, "Predict stalled while the database was down"
    assert "NOT_SERVING" in postgres_outage.health_down
    # Readiness on the inference service and liveness keep the replica in its Service and alive.
    assert postgres_outage.inference_down == postgres_outage.liveness_down == {"SERVING"}
    assert postgres_outage.lost_predictions == postgres_outage.lost_outcomes == 0
    assert not [e for e in postgres_outage.acks.errors if e.startswith("Predict ")]


def test_postgres_gone_then_back_recovers(postgres_outage: Outage) -> None:
    """Once PostgreSQL is back, no thread keeps a dead connection (health and RecordOutcome
    recover), and while it is down a database error is UNAVAILABLE, not INTERNAL."""
    assert postgres_outage.health_back == "SERVING"
    assert not [e for e in postgres_outage.acks.errors if e.endswith("INTERNAL")]
