"""Property-based bad input: hypothesis draws every request message of every served service from
its descriptor (NaN, infinities, extreme integers, odd strings, out-of-range enums, nested and
repeated fields, empty and long lists) and the server must answer each with a documented status
naming the field, never INTERNAL or UNKNOWN, and keep serving. The seeded generator in
test_reliability_fuzz.py covers the hand-written adversarial cases; this one searches the space
and shrinks what it finds."""

from __future__ import annotations

from typing import cast

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rpc_catalog import Rpc, _rpcs_of, contract_services
from tests.server_process import ServerProcess
from tests.test_reliability_fuzz import Case, answer, fuzz_server, judge  # noqa: F401 (fixture)

pytestmark = pytest.mark.serving

T = FieldDescriptor
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 1e308])


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    """Small values, the bounds and their neighbours, and anything in between."""
    edges = [low, low + 1, -1, 0, 1, high - 1, high, 2**31, 2**40]
    return (
        st.sampled_from([e for e in edges if low <= e <= high])
        | st.integers(max(low, -1000), min(high, 1000))
        | st.integers(low, high)
    )


SCALARS = {
    T.TYPE_DOUBLE: FLOATS,
    T.TYPE_FLOAT: st.floats(allow_nan=True, allow_infinity=True, width=32),
    T.TYPE_INT64: _ints(-(2**63), 2**63 - 1),
    T.TYPE_SINT64: _ints(-(2**63), 2**63 - 1),
    T.TYPE_SFIXED64: _ints(-(2**63), 2**63 - 1),
    T.TYPE_INT32: _ints(-(2**31), 2**31 - 1),
    T.TYPE_SINT32: _ints(-(2**31), 2**31 - 1),
    T.TYPE_SFIXED32: _ints(-(2**31), 2**31 - 1),
    T.TYPE_UINT64: _ints(0, 2**64 - 1),
    T.TYPE_FIXED64: _ints(0, 2**64 - 1),
    T.TYPE_UINT32: _ints(0, 2**32 - 1),
    T.TYPE_FIXED32: _ints(0, 2**32 - 1),
    T.TYPE_BOOL: st.booleans(),
    T.TYPE_STRING: st.text(max_size=40) | st.sampled_from(["SPX", "", "x" * 200, "lstm"]),
    T.TYPE_BYTES: st.binary(max_size=200),
}


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[object]:
    if field.enum_type is not None:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-5, 200)
    if field.message_type is not None:
        return _message(field.message_type, depth + 1)
    return SCALARS[field.type]


@st.composite
def _filled(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> bytes:
    from google.protobuf.message_factory import GetMessageClass

    message: Message = GetMessageClass(descriptor)()
    if depth > 3:
        return message.SerializeToString()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # maps: parameters of the OIP, left to the hand-written cases
        if field.is_repeated:
            items = draw(st.lists(_value(field, depth), max_size=8))
            container = getattr(message, field.name)
            for item in items:
                if field.message_type is not None:
                    container.add().MergeFromString(item)
                else:
                    container.append(item)
        elif field.message_type is not None:
            getattr(message, field.name).MergeFromString(draw(_value(field, depth)))
        else:
            setattr(message, field.name, draw(_value(field, depth)))
    return message.SerializeToString()


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[bytes]:
    return _filled(descriptor, depth)


#: Every unary RPC of the contract (both services' modules), each searched on its own so that a
#: rare RPC is not starved by the common ones.
UNARY = [r for name in contract_services() for r in _rpcs_of(name) if not r.client_streaming]


@pytest.mark.parametrize("rpc", UNARY, ids=lambda r: r.name)
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same cases in every CI run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_drawn_request_gets_a_documented_status(
    fuzz_server: ServerProcess,  # noqa: F811 (the fixture, imported above)
    rpc: Rpc,
    data: st.DataObject,
) -> None:
    body = data.draw(_message(cast(Descriptor, rpc.request.DESCRIPTOR)), label="body")
    with grpc.insecure_channel(fuzz_server.target) as channel:
        got = answer(channel, Case("hypothesis", rpc, body))
    assert judge(Case("hypothesis", rpc, body), got) == "", (rpc.path, got)
    assert fuzz_server.process.poll() is None
