"""In process, no RPC: the floor (``DataPlane.predict`` on the last window: validation, scoring,
fusion, Kelly; persistence off), and what reading a request costs the server in each form.
Information beside the RPC rows: what the servicer wraps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clients.bench.inputs import SYMBOL, Models, scratch_database, sp500_bars


@dataclass(frozen=True)
class Floor:
    predict: Callable[[], object]
    #: Bars one Predict needs (the deployed set's window plus the features' warm-up).
    need: int
    #: Whether the deployed set scores in one ONNX run (its serving graph) in this process too.
    one_run: bool


@contextmanager
def floor_plane(models: Models, scratch_db: Path) -> Iterator[Floor]:
    from server.core.config import load_config
    from server.serving.dataplane import DataPlane
    from server.serving.models import ModelHolder
    from server.storage.registry import ModelRepository
    from server.storage.schema import close_database, open_database
    from server.storage.writer import BatchWriter

    config = load_config(
        env={
            "MINHOS_STORAGE_DATABASE_URL": scratch_database(models, scratch_db),
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
            "MINHOS_STORAGE_PERSIST": "false",
        }
    )
    open_database(config.storage.database_url)
    try:
        holder = ModelHolder(ModelRepository(models.repository), config)
        if not holder.reload():
            raise RuntimeError(f"cannot load the models: {holder.last_error}")
        plane = DataPlane(config, holder, BatchWriter(1.0, 1, enabled=False))
        need = holder.current.bars_required
        epoch, ohlcv, _ = sp500_bars()
        window_t, window_x = epoch[-need:], ohlcv[-need:]
        plane.predict(SYMBOL, window_t, window_x)
        yield Floor(lambda: plane.predict(SYMBOL, window_t, window_x), need, holder.current.one_run)
    finally:
        close_database()


def request_read_us(bodies: Mapping[str, bytes], reads: int = 2000) -> dict[str, float]:
    """Median microseconds the server takes to parse each request and read its window into numpy
    (``PredictRequest.FromString`` and ``convert.window_in``), forms taking turns."""
    from minhos.v1 import inference_pb2
    from server.transport.convert import window_in

    samples: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(reads // 10):
        for name, body in bodies.items():
            for _ in range(10):
                began = time.perf_counter()
                window_in(inference_pb2.PredictRequest.FromString(body))
                samples[name].append(time.perf_counter() - began)
    return {name: sorted(s)[len(s) // 2] * 1e6 for name, s in samples.items()}
