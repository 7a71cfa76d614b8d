"""Caller mistakes get INVALID_ARGUMENT naming the field (unknown enum values, out-of-range bins),
do not count as server errors, and a server with retraining off still answers RetrainService."""

from __future__ import annotations

import dataclasses
import re
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.client import bars_from_arrays, raw_from_arrays
from export.data import MarketData
from minhos.v1 import calibration_pb2, common_pb2, inference_pb2, monitoring_pb2, retrain_pb2
from server.core.calibration import MAX_BINS, MIN_BINS
from server.core.config import Config
from server.monitoring.sample import SERVER_ERROR_CODES
from server.storage import queries
from tests.conftest import Trained
from tests.server_harness import live_index, running

pytestmark = pytest.mark.serving

PROTO = Path(__file__).resolve().parent.parent / "protos/minhos/v1/calibration.proto"


def _config(trained: Trained, **retrain: Any) -> Config:
    config = trained.config()
    return dataclasses.replace(config, retrain=dataclasses.replace(config.retrain, **retrain))


def _status(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_unknown_enum_values_are_invalid_arguments_naming_the_field(trained: Trained) -> None:
    with running(_config(trained, enabled=False)) as (_, client):
        stubs = client._stubs
        cases = [
            (
                lambda: stubs.calibration.GetCalibration(
                    calibration_pb2.GetCalibrationRequest(source=42)  # type: ignore[arg-type]
                ),
                "source",
            ),
            (
                lambda: stubs.calibration.GetCalibration(
                    calibration_pb2.GetCalibrationRequest(binning=7)  # type: ignore[arg-type]
                ),
                "binning",
            ),
            (
                lambda: stubs.monitoring.ListAlerts(
                    monitoring_pb2.ListAlertsRequest(min_severity=9)  # type: ignore[arg-type]
                ),
                "min_severity",
            ),
            (
                lambda: stubs.retrain.ListJobs(
                    retrain_pb2.ListJobsRequest(state=77)  # type: ignore[arg-type]
                ),
                "state",
            ),
            (
                lambda: stubs.retrain.ListModelVersions(
                    retrain_pb2.ListModelVersionsRequest(stage=77)  # type: ignore[arg-type]
                ),
                "stage",
            ),
        ]
        for call, field in cases:
            error = _status(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
            assert field in (error.details() or ""), error.details()


def test_bin_limits_are_the_contracts(trained: Trained) -> None:
    stated = re.search(r"reliability bins, (\d+)-(\d+)", PROTO.read_text())
    assert stated is not None
    assert (int(stated[1]), int(stated[2])) == (MIN_BINS, MAX_BINS)
    with running(_config(trained, enabled=False)) as (_, client):
        calibration = client._stubs.calibration
        calibration.GetCalibration(calibration_pb2.GetCalibrationRequest(bins=MAX_BINS))
        for bins in (MIN_BINS - 1, MAX_BINS + 1):
            error = _status(
                lambda b=bins: calibration.GetCalibration(
                    calibration_pb2.GetCalibrationRequest(bins=b)
                )
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "bins" in (error.details() or "")


def test_a_callers_excess_is_not_a_server_error(trained: Trained, sp500: MarketData) -> None:
    with running(_config(trained, enabled=False), stream_max_symbols=1) as (srv, client):
        start = live_index(sp500)
        (bar,) = bars_from_arrays(sp500.times[start : start + 1], sp500.ohlcv[start : start + 1])
        requests = [inference_pb2.StreamRequest(symbol=s, bar=bar) for s in ("SPX", "NDX")]
        error = _status(lambda: list(client._stubs.inference.PredictStream(iter(requests))))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        srv.writer.flush()
        total, errors = queries.request_counts(
            None, datetime(2100, 1, 1), sorted(SERVER_ERROR_CODES)
        )
        assert total >= 1 and errors == 0


def test_a_server_with_retraining_off_answers_retrain_service(
    trained: Trained,
) -> None:
    with running(_config(trained, enabled=False)) as (srv, client):
        assert srv.retraining is None
        stubs = client._stubs.retrain
        versions = stubs.ListModelVersions(retrain_pb2.ListModelVersionsRequest()).versions
        assert {v.kind for v in versions} == {
            common_pb2.MODEL_KIND_LSTM,
            common_pb2.MODEL_KIND_ENSEMBLE,
            common_pb2.MODEL_KIND_KELLY,
        }
        queued = stubs.TriggerRetrain(
            retrain_pb2.TriggerRetrainRequest(kind=common_pb2.MODEL_KIND_ENSEMBLE, note="replica")
        ).job
        assert queued.state == retrain_pb2.JOB_STATE_QUEUED
        assert stubs.GetJob(retrain_pb2.GetJobRequest(job_id=queued.id)).id == queued.id
        listed = stubs.ListJobs(retrain_pb2.ListJobsRequest()).jobs
        assert [j.id for j in listed] == [queued.id]
        error = _status(
            lambda: stubs.Rollback(retrain_pb2.RollbackRequest(kind=common_pb2.MODEL_KIND_LSTM))
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "retrain.enabled=false" in (error.details() or "")


def test_malformed_raw_bars_name_the_buffer(trained: Trained, sp500: MarketData) -> None:
    with running(_config(trained, enabled=False)) as (_, client):
        need = client.serving_info().bars_required
        end = live_index(sp500)
        raw = raw_from_arrays(sp500.times[end - need : end], sp500.ohlcv[end - need : end])
        cases = [
            (
                common_pb2.RawBars(time_seconds=raw.time_seconds[:-3], ohlcv=raw.ohlcv),
                "raw.time_seconds",
            ),
            (common_pb2.RawBars(time_seconds=raw.time_seconds, ohlcv=raw.ohlcv[:-8]), "raw.ohlcv"),
        ]
        bad_price = bytearray(raw.ohlcv)
        bad_price[-16:-8] = struct.pack("<d", float("nan"))  # the last bar's close
        cases.append(
            (common_pb2.RawBars(time_seconds=raw.time_seconds, ohlcv=bytes(bad_price)), "raw.ohlcv")
        )
        for bars, field in cases:
            error = _status(lambda b=bars: client.predict("SPX", b))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert field in (error.details() or ""), error.details()
        both = inference_pb2.PredictRequest(symbol="SPX", raw=raw)
        both.columns.time_seconds.append(1)
        error = _status(lambda: client._stubs.inference.Predict(both))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
