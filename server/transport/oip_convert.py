"""Open Inference Protocol tensors <-> numpy arrays, in both of the protocol's forms: typed
``contents`` and ``raw_input_contents`` / ``raw_output_contents`` (little-endian, row-major, no
padding; a BYTES element is a 4-byte little-endian length and its bytes).

Every check names the tensor at fault, so a client reads which input to fix."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from minhos.oip.v2 import open_inference_pb2 as oip
from server.core.errors import InvalidArgument

#: numpy's layout of each fixed-size datatype on the wire.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
#: The InferTensorContents field that carries each datatype in typed form.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: Input parameters of Triton's shared-memory extension, which this server does not offer.
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor a model takes or returns."""

    name: str
    datatype: str
    #: Dimensions; -1 for one that may vary (the batch, at least 1).
    shape: tuple[int, ...]

    def describe(self) -> str:
        dims = ", ".join("N" if d < 0 else str(d) for d in self.shape)
        return f"{self.datatype} [{dims}]"

    def metadata(self) -> oip.ModelMetadataResponse.TensorMetadata:
        return oip.ModelMetadataResponse.TensorMetadata(
            name=self.name, datatype=self.datatype, shape=list(self.shape)
        )


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class RequestTensors:
    """A request's inputs by name, in whichever form the request carries them. Construction
    checks the request as a whole (one form, one raw entry per input, no name twice)."""

    def __init__(self, request: oip.ModelInferRequest) -> None:
        inputs = request.inputs
        raw = request.raw_input_contents
        #: Whether the inputs came as raw bytes (the response then goes the same way).
        self.raw = len(raw) > 0
        if self.raw and len(raw) != len(inputs):
            raise InvalidArgument(
                f"{len(raw)} entries for {len(inputs)} inputs; raw contents need one per input, "
                "in the order of inputs",
                field="raw_input_contents",
            )
        self._tensors: dict[str, tuple[oip.ModelInferRequest.InferInputTensor, bytes | None]] = {}
        for i, tensor in enumerate(inputs):
            name = tensor.name
            if not name:
                raise InvalidArgument("has no name", field=f"inputs[{i}]")
            if name in self._tensors:
                raise InvalidArgument("given twice", field=name)
            if self.raw and tensor.HasField("contents"):
                raise InvalidArgument(
                    "sets contents in a request that uses raw_input_contents; use one form",
                    field=name,
                )
            if tensor.parameters and any(key in tensor.parameters for key in SHARED_MEMORY):
                raise InvalidArgument(
                    "shared memory is not supported; send the tensor's contents", field=name
                )
            self._tensors[name] = (tensor, raw[i] if self.raw else None)

    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def read(self, spec: TensorSpec) -> npt.NDArray[Any]:
        """The input ``spec`` names, checked against it, as an array of its shape (BYTES:
        an object array of ``bytes``)."""
        found = self._tensors.get(spec.name)
        if found is None:
            raise InvalidArgument(f"missing input ({spec.describe()})", field=spec.name)
        tensor, raw = found
        if tensor.datatype != spec.datatype:
            raise InvalidArgument(
                f"datatype {tensor.datatype or '(unset)'}; the model takes {spec.describe()}",
                field=spec.name,
            )
        shape = tuple(tensor.shape)
        if len(shape) != len(spec.shape) or any(
            d < 1 if want < 0 else d != want for d, want in zip(shape, spec.shape, strict=True)
        ):
            raise InvalidArgument(
                f"shape {shape_text(shape)}; the model takes {spec.describe()}", field=spec.name
            )
        count = math.prod(shape)
        if spec.datatype == "BYTES":
            items = (
                split_bytes(raw, spec.name)
                if raw is not None
                else list(tensor.contents.bytes_contents)
            )
            if len(items) != count:
                raise InvalidArgument(
                    f"{len(items)} elements for shape {shape_text(shape)} ({count})",
                    field=spec.name,
                )
            values = np.empty(count, dtype=object)
            values[:] = items
            return values.reshape(shape)
        dtype = DTYPES[spec.datatype]
        if raw is not None:
            if len(raw) != count * dtype.itemsize:
                raise InvalidArgument(
                    f"{len(raw)} bytes of raw contents; shape {shape_text(shape)} of "
                    f"{spec.datatype} takes {count * dtype.itemsize}",
                    field=spec.name,
                )
            return np.frombuffer(raw, dtype=dtype).reshape(shape)
        field = CONTENTS_FIELD[spec.datatype]
        typed = getattr(tensor.contents, field)
        if len(typed) != count:
            raise InvalidArgument(
                f"{len(typed)} values in contents.{field}; shape {shape_text(shape)} takes {count}",
                field=spec.name,
            )
        return np.array(typed, dtype=dtype).reshape(shape)


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    """The elements of a raw BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    items = []
    at, end = 0, len(raw)
    while at < end:
        if at + 4 > end:
            raise InvalidArgument(
                f"raw BYTES contents end inside a length at byte {at}", field=name
            )
        (length,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + length > end:
            raise InvalidArgument(
                f"raw BYTES element of {length} bytes runs past the end at byte {at}", field=name
            )
        items.append(raw[at : at + length])
        at += length
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def add_output(
    response: oip.ModelInferResponse, spec: TensorSpec, values: npt.NDArray[Any], raw: bool
) -> None:
    """Appends one output tensor to ``response``: raw bytes when ``raw``, typed contents
    otherwise."""
    tensor = response.outputs.add(name=spec.name, datatype=spec.datatype, shape=values.shape)
    if raw:
        response.raw_output_contents.append(raw_bytes(spec, values))
    else:
        fill_contents(tensor.contents, spec, values)


def raw_bytes(spec: TensorSpec, values: npt.NDArray[Any]) -> bytes:
    """A tensor's elements in raw form."""
    if spec.datatype == "BYTES":
        return join_bytes(values.reshape(-1).tolist())
    return values.astype(DTYPES[spec.datatype], copy=False).tobytes()


def fill_contents(
    contents: oip.InferTensorContents, spec: TensorSpec, values: npt.NDArray[Any]
) -> None:
    """A tensor's elements in typed form."""
    getattr(contents, CONTENTS_FIELD[spec.datatype]).extend(values.reshape(-1).tolist())
