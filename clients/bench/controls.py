"""What the servers that do strictly less than MinhOS do, each in its own process (servers.py
starts them; issue 10).

- The controls (sync grpcio with 8 threads, and grpc.aio): the same contract and method, the
  request parsed into numpy as MinhOS parses it (any form), the two deployed ONNX sessions run on
  a feature window computed once at start, a PredictResponse serialized. No features, validation,
  fusion, Kelly, monitoring or storage per request.
- The bare server: echoes fixed payloads of the real replies' sizes, for a unary round trip and a
  bidirectional stream with no work at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from multiprocessing.connection import Connection

import grpc
import numpy as np

from minhos.v1 import common_pb2, inference_pb2

SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
BARE_SERVICE = "bench.Bare"
#: Thread-pool size of the sync control and the bare server (MinhOS's default ``server.workers``).
WORKERS = 8


class ControlWork:
    """The fixed work of one control request."""

    def __init__(self, repository: str, database_url: str) -> None:
        from server.core.config import load_config
        from server.core.features import window_features_batch
        from server.serving.models import load_model_set
        from server.storage.registry import ModelRepository
        from server.storage.schema import close_database, open_database
        from server.transport import convert

        open_database(database_url)
        try:
            repo = ModelRepository(repository)
            self.models = load_model_set(repo, repo.deployed(), load_config(env={}))
        finally:
            close_database()
        rng = np.random.default_rng(0)
        need = self.models.bars_required
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, need)))
        bars = np.column_stack([close, close * 1.01, close * 0.99, close, np.full(need, 1e6)])
        self.features = window_features_batch(bars[None], self.models.window).astype(np.float32)
        self.rows = np.ascontiguousarray(self.features[:, -1, :])
        self.window_in = convert.window_in
        versions = self.models.versions
        self.reply = inference_pb2.PredictResponse(
            prediction_id="0" * 36,
            symbol="SPX",
            direction=common_pb2.DIRECTION_UP,
            lstm=inference_pb2.ModelOutput(
                kind=common_pb2.MODEL_KIND_LSTM, version=versions["lstm"]
            ),
            ensemble=inference_pb2.ModelOutput(
                kind=common_pb2.MODEL_KIND_ENSEMBLE, version=versions["ensemble"]
            ),
            kelly_version=versions["kelly"],
        )

    def __call__(self, request: bytes) -> bytes:
        parsed = inference_pb2.PredictRequest.FromString(request)
        self.window_in(parsed)  # the window into numpy, as the real server reads it
        lstm = self.models.lstm_probability(self.features)
        ensemble = self.models.ensemble_probability(self.rows)
        reply = inference_pb2.PredictResponse()
        reply.CopyFrom(self.reply)
        reply.probability_up = float(np.asarray(lstm).reshape(-1)[0])
        reply.confidence = float(np.asarray(ensemble).reshape(-1)[-1])
        return reply.SerializeToString()


def _serve_sync(work: ControlWork, ready: Connection) -> None:
    def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
        return work(request)

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.send(port)
    ready.recv()  # the parent closes its end (or dies): stop
    server.stop(0)


def _serve_aio(work: ControlWork, ready: Connection) -> None:
    async def predict(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return work(request)

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.send(port)
        await asyncio.get_running_loop().run_in_executor(None, ready.recv)
        await server.stop(0)

    asyncio.run(main())


def serve_control(kind: str, repository: str, database_url: str, ready: Connection) -> None:
    """Runs in its own process until the parent closes ``ready``; ``kind`` "sync" or "aio"."""
    work = ControlWork(repository, database_url)
    (_serve_aio if kind == "aio" else _serve_sync)(work, ready)


def serve_bare(unary_size: int, stream_size: int, ready: Connection) -> None:
    """Runs in its own process: echoes payloads of the real replies' sizes, no work."""
    unary_payload, stream_payload = b"x" * unary_size, b"x" * stream_size

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return unary_payload

    def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in requests:
            yield stream_payload

    handler = grpc.method_handlers_generic_handler(
        BARE_SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.send(port)
    ready.recv()
    server.stop(0)
