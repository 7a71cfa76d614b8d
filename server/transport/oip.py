"""The Open Inference Protocol (KServe V2, ``inference.GRPCInferenceService``) beside the typed
contract: another thin adapter over the same data plane, so that Triton and KServe clients work
unchanged.

Three models: ``lstm`` and ``ensemble`` are each ONNX session of the deployed set alone, run on
feature tensors the client computed; ``minhos`` is the whole fused path from raw bars, the same
``DataPlane.predict`` as ``Predict`` (same validation, features, fusion, sizing and storage).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from minhos.oip.v2 import open_inference_pb2 as oip
from minhos.oip.v2 import open_inference_pb2_grpc as oip_grpc
from server.core.errors import InvalidArgument, MinhosError, NotFound
from server.core.manifest import KINDS
from server.core.records import Prediction
from server.serving.dataplane import SERVER_VERSION, DataPlane
from server.serving.models import ModelSet
from server.transport.handlers import Undecodable
from server.transport.oip_convert import (
    RequestTensors,
    TensorSpec,
    add_output,
    fill_contents,
    raw_bytes,
)
from server.transport.pipeline import pipelined
from server.transport.servicers import CODES, Base, rpc, undecodable
from server.transport.telemetry import Telemetry

log = logging.getLogger("minhos.oip")

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
LSTM, ENSEMBLE, FUSED = "lstm", "ensemble", "minhos"
MODEL_NAMES = (LSTM, ENSEMBLE, FUSED)
#: The request parameter that names the instrument of a ``minhos`` request.
SYMBOL = "symbol"
#: Protocol extensions served (Triton's names): request parameters (the symbol).
EXTENSIONS = ("parameters",)
#: Stream requests handled per batch, and read but not yet answered, per stream.
MAX_STREAM_BATCH = 64
MAX_IN_FLIGHT = 256

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ModelSpec:
    """What a model takes and returns."""

    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class ServedModel:
    """A model of one deployed set as the protocol shows it, built once per set: its spec and
    version, and skeletons of its full response (every output's name, datatype and shape, for a
    batch size), which a response copies in one call instead of building each output field by
    field."""

    #: Batch sizes whose skeletons are kept.
    SKELETONS = 64

    def __init__(self, spec: ModelSpec, version: str) -> None:
        self.spec = spec
        self.version = version
        self.inputs = frozenset(t.name for t in spec.inputs)
        self.outputs = {t.name: t for t in spec.outputs}
        self._skeletons: dict[int, oip.ModelInferResponse] = {}

    def skeleton(self, rows: int) -> oip.ModelInferResponse:
        found = self._skeletons.get(rows)
        if found is None:
            found = oip.ModelInferResponse(
                model_name=self.spec.name,
                model_version=self.version,
                outputs=[
                    oip.ModelInferResponse.InferOutputTensor(
                        name=t.name, datatype=t.datatype, shape=[rows, *t.shape[1:]]
                    )
                    for t in self.spec.outputs
                ],
            )
            if len(self._skeletons) < self.SKELETONS:
                self._skeletons[rows] = found
        return found


@dataclass(frozen=True)
class Outputs:
    """A model's output arrays by name, and the version that computed them if it may differ from
    the one resolved before the run."""

    values: dict[str, Array]
    version: str = ""


def model_spec(name: str, models: ModelSet) -> ModelSpec:
    """What model ``name`` takes and returns, for the deployed set's window and features."""
    features = len(models.feature_names)
    probability = TensorSpec("probability_up", "FP32", (-1,))
    if name == LSTM:
        inputs = (TensorSpec("features", "FP32", (-1, models.window, features)),)
        return ModelSpec(name, "onnxruntime_onnx", inputs, (probability,))
    if name == ENSEMBLE:
        inputs = (TensorSpec("features", "FP32", (-1, features)),)
        return ModelSpec(name, "onnxruntime_onnx", inputs, (probability,))
    need = models.bars_required
    return ModelSpec(
        name,
        "minhos",
        (
            TensorSpec("bars", "FP64", (-1, need, 5)),
            TensorSpec("time_seconds", "INT64", (-1, need)),
            # Optional: the request parameter `symbol` may name the instrument of every row instead.
            TensorSpec(SYMBOL, "BYTES", (-1,)),
        ),
        (
            TensorSpec("probability_up", "FP64", (-1,)),
            TensorSpec("confidence", "FP64", (-1,)),
            TensorSpec("agreement", "FP64", (-1,)),
            TensorSpec("kelly_fraction", "FP64", (-1,)),
            TensorSpec("direction", "INT32", (-1,)),
            TensorSpec("prediction_id", "BYTES", (-1,)),
        ),
    )


def version_of(name: str, versions: dict[str, str]) -> str:
    """A model's version: the deployed version of its kind; for ``minhos``, the set's three
    (lstm, ensemble, kelly) joined by "+"."""
    if name == FUSED:
        return "+".join(versions[kind] for kind in KINDS)
    return versions[name]


_BAR_TIME = re.compile(r"bars\[(\d+)\]\.time")


def in_row(exc: MinhosError, row: int, symbol_field: str) -> MinhosError:
    """The data plane's error for one window, naming the tensor element instead: ``bars[3].high``
    of row 2 is ``bars[2][3].high``, a bar's time is in ``time_seconds``."""
    field = exc.field
    text = str(exc)[len(field) + 2 :] if field else str(exc)
    if field == "symbol":
        field = symbol_field
    elif match := _BAR_TIME.fullmatch(field):
        field = f"time_seconds[{row}][{match[1]}]"
    elif field.startswith("bars"):
        field = f"bars[{row}]{field[4:]}"
    return type(exc)(text, field=field)


class OpenInferenceServicer(Base, oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, telemetry: Telemetry) -> None:
        super().__init__(plane, telemetry)
        self._runners: dict[
            str, Callable[[ModelSet, ModelSpec, RequestTensors, oip.ModelInferRequest], Outputs]
        ] = {LSTM: self._run_lstm, ENSEMBLE: self._run_ensemble, FUSED: self._run_fused}
        #: The served models of the last model set seen (replaced whole after a hot swap).
        self._served: tuple[ModelSet | None, dict[str, ServedModel]] = (None, {})

    # -- health and metadata: probes are not recorded (a prober calls them every few seconds) ---

    def ServerLive(
        self, request: oip.ServerLiveRequest, context: grpc.ServicerContext
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: oip.ServerReadyRequest, context: grpc.ServicerContext
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.plane.holder.loaded and self.plane.database_ok())

    def ModelReady(
        self, request: oip.ModelReadyRequest, context: grpc.ServicerContext
    ) -> oip.ModelReadyResponse:
        try:
            self._resolve(request.name, request.version, "name", "version")
        except MinhosError:
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    @rpc("ServerMetadata")
    def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> oip.ServerMetadataResponse:
        name, _, version = SERVER_VERSION.partition("/")
        return oip.ServerMetadataResponse(name=name, version=version, extensions=EXTENSIONS)

    @rpc("ModelMetadata")
    def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> oip.ModelMetadataResponse:
        _, served = self._resolve(request.name, request.version, "name", "version")
        spec = served.spec
        return oip.ModelMetadataResponse(
            name=spec.name,
            versions=[served.version],
            platform=spec.platform,
            inputs=[t.metadata() for t in spec.inputs],
            outputs=[t.metadata() for t in spec.outputs],
        )

    @rpc("RepositoryIndex")
    def RepositoryIndex(
        self, request: oip.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> oip.RepositoryIndexResponse:
        entry = oip.RepositoryIndexResponse.ModelIndex
        try:
            versions = self.plane.models().versions
        except MinhosError as exc:
            if request.ready:
                return oip.RepositoryIndexResponse()
            return oip.RepositoryIndexResponse(
                models=[entry(name=n, state="UNAVAILABLE", reason=str(exc)) for n in MODEL_NAMES]
            )
        return oip.RepositoryIndexResponse(
            models=[
                entry(name=n, version=version_of(n, versions), state="READY") for n in MODEL_NAMES
            ]
        )

    # -- inference -------------------------------------------------------------------------------

    @rpc("ModelInfer")
    def ModelInfer(
        self, request: oip.ModelInferRequest, context: grpc.ServicerContext
    ) -> oip.ModelInferResponse:
        response = oip.ModelInferResponse()
        self._infer(request, response)
        return response

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[oip.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[oip.ModelStreamInferResponse]:
        """Triton's streaming: each request answered in order; one that fails is answered with
        its error message and the stream goes on."""

        def answer(
            requests: list[oip.ModelInferRequest],
        ) -> tuple[list[oip.ModelStreamInferResponse], bool]:
            began = time.perf_counter()
            replies = []
            codes: Counter[grpc.StatusCode] = Counter()
            for request in requests:
                reply = oip.ModelStreamInferResponse()
                try:
                    if isinstance(request, Undecodable):
                        raise undecodable(request)
                    self._infer(request, reply.infer_response)
                    codes[grpc.StatusCode.OK] += 1
                except MinhosError as exc:
                    reply.Clear()
                    reply.error_message = str(exc)
                    codes[CODES.get(type(exc), grpc.StatusCode.INTERNAL)] += 1
                except Exception as exc:
                    log.error("unhandled error", exc_info=exc, extra={"method": "ModelStreamInfer"})
                    reply.Clear()
                    reply.error_message = (
                        f"internal error ({type(exc).__name__}); see the server log"
                    )
                    codes[grpc.StatusCode.INTERNAL] += 1
                replies.append(reply)
            for code, count in codes.items():
                self._done("ModelStreamInfer", code, began, count)
            return replies, True

        async for replies in pipelined(
            request_iterator, answer, max_batch=MAX_STREAM_BATCH, max_in_flight=MAX_IN_FLIGHT
        ):
            for reply in replies:
                yield reply

    def _resolve(
        self, name: str, version: str, name_field: str, version_field: str
    ) -> tuple[ModelSet, ServedModel]:
        """The deployed set and the model as served from it; NOT_FOUND for an unknown model or a
        version that is not the deployed one."""
        if name not in MODEL_NAMES:
            raise NotFound(
                f"no model {name!r}; this server serves {', '.join(MODEL_NAMES)}",
                field=name_field,
            )
        models = self.plane.models()
        cached, served = self._served
        if cached is not models:
            served = {
                n: ServedModel(model_spec(n, models), version_of(n, models.versions))
                for n in MODEL_NAMES
            }
            self._served = (models, served)
        model = served[name]
        if version and version != model.version:
            raise NotFound(
                f"version {version!r} of {name} is not deployed; the deployed one is "
                f"{model.version!r}",
                field=version_field,
            )
        return models, model

    def _infer(self, request: oip.ModelInferRequest, response: oip.ModelInferResponse) -> None:
        models, served = self._resolve(
            request.model_name, request.model_version, "model_name", "model_version"
        )
        spec = served.spec
        tensors = RequestTensors(request)
        for name in tensors.names():
            if name not in served.inputs:
                raise InvalidArgument(
                    f"not an input of {spec.name} (its inputs: {', '.join(sorted(served.inputs))})",
                    field=name,
                )
        wanted = []
        for i, asked in enumerate(request.outputs):
            found = served.outputs.get(asked.name)
            if found is None:
                raise InvalidArgument(
                    f"{asked.name!r} is not an output of {spec.name} (its outputs: "
                    f"{', '.join(served.outputs)})",
                    field=f"outputs[{i}]",
                )
            wanted.append(found)
        outputs = self._runners[spec.name](models, spec, tensors, request)
        if wanted:
            response.model_name = spec.name
            response.model_version = served.version
            for out in wanted:
                add_output(response, out, outputs.values[out.name], tensors.raw)
        else:
            values = [outputs.values[out.name] for out in spec.outputs]
            response.MergeFrom(served.skeleton(len(values[0])))
            if tensors.raw:
                response.raw_output_contents.extend(
                    [raw_bytes(out, v) for out, v in zip(spec.outputs, values, strict=True)]
                )
            else:
                for tensor, out, v in zip(response.outputs, spec.outputs, values, strict=True):
                    fill_contents(tensor.contents, out, v)
        if outputs.version:
            response.model_version = outputs.version
        response.id = request.id

    def _run_lstm(
        self,
        models: ModelSet,
        spec: ModelSpec,
        tensors: RequestTensors,
        request: oip.ModelInferRequest,
    ) -> Outputs:
        sequences = tensors.read(spec.inputs[0])
        return Outputs({"probability_up": models.lstm_probability(sequences)})

    def _run_ensemble(
        self,
        models: ModelSet,
        spec: ModelSpec,
        tensors: RequestTensors,
        request: oip.ModelInferRequest,
    ) -> Outputs:
        rows = tensors.read(spec.inputs[0])
        return Outputs({"probability_up": models.ensemble_probability(rows)})

    def _run_fused(
        self,
        models: ModelSet,
        spec: ModelSpec,
        tensors: RequestTensors,
        request: oip.ModelInferRequest,
    ) -> Outputs:
        bars_spec, times_spec, symbol_spec = spec.inputs
        bars = tensors.read(bars_spec)
        times = tensors.read(times_spec)
        if len(times) != len(bars):
            raise InvalidArgument(
                f"{len(times)} rows for the {len(bars)} rows of bars", field=times_spec.name
            )
        symbols, symbol_field = self._symbols(request, tensors, symbol_spec, len(bars))
        predictions: list[Prediction] = []
        for row in range(len(bars)):
            try:
                predictions.append(
                    self.plane.predict(symbols[row], times[row], bars[row], form="bars")
                )
            except MinhosError as exc:
                raise in_row(exc, row, symbol_field(row)) from None
        scores = np.array(
            [(p.probability_up, p.confidence, p.agreement, p.kelly_fraction) for p in predictions]
        ).T
        ids = np.empty(len(predictions), dtype=object)
        ids[:] = [p.id.encode() for p in predictions]
        return Outputs(
            {
                "probability_up": scores[0],
                "confidence": scores[1],
                "agreement": scores[2],
                "kelly_fraction": scores[3],
                "direction": np.array([p.direction for p in predictions], dtype=np.int32),
                "prediction_id": ids,
            },
            # The versions that served, should a hot swap have come between resolve and predict.
            version_of(FUSED, predictions[0].versions),
        )

    @staticmethod
    def _symbols(
        request: oip.ModelInferRequest, tensors: RequestTensors, spec: TensorSpec, rows: int
    ) -> tuple[list[str], Callable[[int], str]]:
        """Each row's symbol, from the request parameter or the BYTES input, and how an error
        names it."""
        given = request.parameters.get(SYMBOL)
        if spec.name in tensors:
            if given is not None:
                raise InvalidArgument(
                    "given both as a request parameter and as an input; use one", field=SYMBOL
                )
            values = tensors.read(spec)
            if len(values) != rows:
                raise InvalidArgument(
                    f"{len(values)} symbols for {rows} rows of bars", field=SYMBOL
                )
            try:
                symbols = [bytes(v).decode() for v in values]
            except UnicodeDecodeError:
                raise InvalidArgument("not UTF-8", field=SYMBOL) from None
            return symbols, lambda row: f"{SYMBOL}[{row}]"
        if given is None:
            raise InvalidArgument(
                "missing: set the request parameter 'symbol' (a string) or the BYTES input "
                "'symbol' (one per row)",
                field=SYMBOL,
            )
        if given.WhichOneof("parameter_choice") != "string_param":
            raise InvalidArgument("the request parameter must be a string", field=SYMBOL)
        return [given.string_param] * rows, lambda row: SYMBOL
