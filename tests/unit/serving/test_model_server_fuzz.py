"""Property-based fuzzing of the model server over REST and gRPC, in-process: no generated body gets a 5xx.

For the tensor model (a RandomForest saved from numpy) and the string-column
model (a OneHotEncoder pipeline), hypothesis generates a profile's worth of bodies per protocol (`ci`, the
default: 400; `nightly`: 5,000; tests/conftest.py, HYPOTHESIS_PROFILE): JSON of every shape with non-finite and
out-of-range numbers, wrong types and shapes, invalid text, deep nesting, bodies over the limit (sent with a
Content-Length and chunked), wrong or missing Content-Type, V2 binary extension bodies whose headers lie, and
gRPC requests with lying raw contents. Every answer is below 500, every refusal is JSON naming the problem, and
the server answers a valid request after.

The REST app goes through httpx's ASGI transport and gRPC through a grpc.aio server on a loopback port, both in
the session's event loop (tests/unit/serving/conftest.py).
"""

from __future__ import annotations

import json
import struct

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from sandbox.wire import MAX_BODY_BYTES

FUZZED = ["forest_numpy", "pipeline_onehot"]
# How many bodies each test sends is the hypothesis profile's (max_examples), not this module's.
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
CONTENT_TYPES = [None, "application/json", "text/plain", "application/octet-stream", "application/json; charset=x"]

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([3.5e38, -3.5e38, 1e308, 5e-324, 2.0**63])
numbers = st.integers(min_value=-(2**70), max_value=2**70) | floats
texts = st.text(max_size=8) | st.sampled_from(["\ud800", "paris", "", "a\x00b"])
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(texts, inner, max_size=4), max_leaves=40
)
datatypes = st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "fp64", "STRING"])
shapes = st.lists(st.integers(min_value=-1, max_value=9), max_size=4) | json_values
names = st.sampled_from(["input-0", "city", "amount", "count", "x", ""]) | texts
tensors = st.fixed_dictionaries(
    {"name": names, "shape": shapes, "datatype": datatypes | json_values, "data": json_values},
    optional={"parameters": json_values},
)


def _dump(value) -> bytes:
    # allow_nan: NaN and Infinity as the tokens clients send; ensure_ascii keeps lone surrogates as \ud800.
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def v1_bodies(draw) -> tuple[bytes, str | None]:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        depth = draw(st.integers(100, 5000))
        body = b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == 1:
        body = draw(st.binary(max_size=64))
    elif kind <= 4:
        width = draw(st.integers(0, 10))
        rows = draw(st.lists(st.lists(scalars, min_size=width, max_size=width), max_size=4))
        body = _dump({"instances": rows})
    elif kind <= 6:
        records = draw(st.lists(st.dictionaries(names, scalars, max_size=5), max_size=3))
        body = _dump({draw(st.sampled_from(["instances", "inputs"])): records})
    else:
        body = _dump(draw(json_values | st.fixed_dictionaries({"instances": json_values})))
    return body, draw(st.sampled_from(CONTENT_TYPES))


@st.composite
def v2_bodies(draw) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.integers(0, 9))
    headers = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["content-type"] = content_type
    if kind == 0:  # the binary tensor extension, with headers and sizes that may lie
        inputs = draw(st.lists(tensors, max_size=3))
        for tensor in inputs:
            tensor.pop("data", None)
            tensor["parameters"] = {"binary_data_size": draw(st.integers(-5, 80) | json_values)}
        header = _dump({"inputs": inputs})
        raw = draw(st.binary(max_size=96))
        headers["inference-header-content-length"] = draw(
            st.sampled_from([str(len(header)), str(len(header) + 3), "-1", "abc", str(10**9)])
        )
        return header + raw, headers
    if kind == 1:
        depth = draw(st.integers(100, 5000))
        prefix = b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": '
        return prefix + b"[" * depth + b"]" * depth + b"}]}", headers
    if kind == 2:
        return draw(st.binary(max_size=64)), headers
    if kind <= 7:
        body = {"inputs": draw(st.lists(tensors, max_size=3))}
        if draw(st.booleans()):
            body["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": names}), max_size=2) | json_values)
        if draw(st.booleans()):
            body["id"] = draw(json_values)
        return _dump(body), headers
    return _dump(draw(json_values)), headers


def assert_refusal_or_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        payload = response.json()
        assert isinstance(payload.get("error"), str) and payload["error"], response.text[:300]


async def chunks(body: bytes, size: int = 65536):
    """The body with no Content-Length: httpx sends it chunked, and the server counts what it reads."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("key", FUZZED)
def test_v1_fuzz_gets_no_5xx(served, key):
    server = served[key]

    @FUZZ
    @given(case=v1_bodies())
    def send(case):
        body, content_type = case
        headers = {"content-type": content_type} if content_type else {}
        assert_refusal_or_answer(server.post(server.v1_predict, content=body, headers=headers))

    send()
    server.assert_healthy()


@pytest.mark.parametrize("key", FUZZED)
def test_v2_fuzz_gets_no_5xx(served, key):
    server = served[key]

    @FUZZ
    @given(case=v2_bodies())
    def send(case):
        body, headers = case
        assert_refusal_or_answer(server.post(server.v2_infer, content=body, headers=headers))

    send()
    server.assert_healthy()


@pytest.mark.parametrize("key", FUZZED)
def test_oversized_bodies_are_413_with_a_length_and_chunked(served, key):
    server = served[key]
    big = b'{"instances": [' + b"[0.5, 0.5]," * (MAX_BODY_BYTES // 10) + b"[0.5]]}"
    for url in (server.v1_predict, server.v2_infer):
        sized = server.post(url, content=big, headers={"content-type": "application/json"})
        assert "content-length" in sized.request.headers
        assert sized.status_code == 413 and "over" in sized.json()["error"]
        chunked = server.post(url, content=chunks(big), headers={"content-type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413 and "over" in chunked.json()["error"]
    server.assert_healthy()


def _utf8(text: str) -> bool:
    """Protobuf strings are UTF-8: a lone surrogate cannot even be put in a message."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@st.composite
def grpc_requests(draw) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["MODEL", "other"])), id=draw(st.text(max_size=5).filter(_utf8))
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        datatype = draw(datatypes)
        shape = draw(st.lists(st.integers(0, 9), max_size=3))
        tensor = request.inputs.add(name=draw(names.filter(_utf8)), datatype=datatype, shape=shape)
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=80)))
        elif datatype.upper() == "BYTES":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=10)))
        elif datatype.upper() == "BOOL":
            tensor.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=10)))
        elif datatype.upper().startswith("FP"):
            values = draw(st.lists(floats, max_size=10))
            tensor.contents.fp64_contents.extend(values)
        else:
            tensor.contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10)))
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(struct.pack("<d", 1.0))  # one more raw buffer than inputs: a lie
    return request


@pytest.mark.parametrize("key", FUZZED)
def test_grpc_fuzz_gets_no_internal_errors(served, key):
    server = served[key]
    refusals = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

    async def open_channel() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(server.grpc_address)

    channel = server.run(open_channel())  # made in the servers' loop, which it must share
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def infer(request: pb.ModelInferRequest) -> grpc.RpcError | None:
        try:
            await stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            return exc
        return None

    @FUZZ
    @given(request=grpc_requests())
    def send(request):
        if request.model_name == "MODEL":
            request.model_name = server.name
        exc = server.run(infer(request))
        if exc is not None:
            assert exc.code() in refusals, f"{exc.code()}: {exc.details()}"
            assert exc.details()

    try:
        send()
    finally:
        server.run(channel.close())
    server.assert_healthy()
