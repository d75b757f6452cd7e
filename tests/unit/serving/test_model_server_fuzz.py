"""Property-based fuzzing of the model server over REST and gRPC, in-process: no generated body gets a 5xx.

For the tensor model (a RandomForest saved from numpy) and the string-column
model (a OneHotEncoder pipeline), hypothesis generates a profile's worth of bodies per protocol (`ci`, the
default: 400; `nightly`: 5,000; tests/conftest.py, HYPOTHESIS_PROFILE): JSON of every shape with non-finite and
out-of-range numbers, wrong types and shapes, invalid text, deep nesting, bodies over the limit (sent with a
Content-Length and chunked), wrong or missing Content-Type, V2 binary extension bodies whose sizes are drawn
around the real data's length, valid V2 bodies with one field made hostile, integers beyond int64 and float64 in
every numeric field (shapes included) beside tokens orjson refuses (NaN, Infinity, 1e400, lone surrogates),
compressed bodies (gzip, deflate, a zip bomb, an unknown encoding), and gRPC requests with lying raw contents.
A failure prints the body and headers sent, to paste into a regression test. Every answer is below 500, every
refusal is JSON naming the problem, and the server answers a valid request after.

The REST app goes through httpx's ASGI transport and gRPC through a grpc.aio server on a loopback port, both in
the session's event loop (tests/unit/serving/conftest.py).
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib

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


class Raw(str):
    """A JSON token written as is: what json.dumps will not write (1e400, a bare huge exponent) or writes only
    one way."""


# Integers beyond int64 (and beyond float64: 10**309 parses exactly with Python's json, not at all with orjson).
huge_ints = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**62, -(2**63) - 1, 10**309]) | st.integers(
    min_value=2**63, max_value=2**1100
)
# Tokens orjson refuses, so the body takes the slower parser's path, mixed into otherwise valid bodies.
raw_tokens = st.sampled_from(
    [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e999"), Raw('"\\ud800"'), Raw(str(10**309))]
)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([3.5e38, -3.5e38, 1e308, 5e-324, 2.0**63])
numbers = st.integers(min_value=-(2**70), max_value=2**70) | floats | huge_ints | raw_tokens
texts = st.text(max_size=8) | st.sampled_from(["\ud800", "paris", "", "a\x00b"])
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(texts, inner, max_size=4), max_leaves=40
)
datatypes = st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "fp64", "STRING"])
dims = st.integers(min_value=-1, max_value=9) | huge_ints | raw_tokens
shapes = st.lists(dims, max_size=4) | json_values
names = st.sampled_from(["input-0", "city", "amount", "count", "x", ""]) | texts
# The most values a valid tensor of these models needs; hostile ones add a token to otherwise valid data.
values = st.lists(st.floats(-10, 10) | numbers, max_size=40)
tensors = st.fixed_dictionaries(
    {"name": names, "shape": shapes, "datatype": datatypes | json_values, "data": json_values | values},
    optional={"parameters": json_values},
)
ENCODINGS = {"gzip": gzip.compress, "deflate": zlib.compress}
# Far over the body limit once decompressed, far under it as sent: made once, sent now and then.
ZIP_BOMB = gzip.compress(b" " * (4 * MAX_BODY_BYTES))


def _dump(value) -> bytes:
    """JSON as clients send it: NaN and Infinity as tokens, lone surrogates as \\ud800, Raw tokens as they are."""
    if isinstance(value, Raw):
        return value.encode()
    if isinstance(value, dict):
        items = (json.dumps(str(key)).encode() + b": " + _dump(item) for key, item in value.items())
        return b"{" + b", ".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b", ".join(_dump(item) for item in value) + b"]"
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def encoded(draw, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The body as sent: mostly plain, sometimes compressed (or a bomb, or an encoding nobody decodes)."""
    how = draw(st.sampled_from(["plain"] * 6 + ["gzip", "deflate", "bomb", "br", "lying"]))
    if how == "plain":
        return body, headers
    if how in ENCODINGS:
        return ENCODINGS[how](body), {**headers, "content-encoding": how}
    if how == "bomb":
        return ZIP_BOMB, {**headers, "content-encoding": "gzip"}
    if how == "br":
        return body, {**headers, "content-encoding": "br"}
    return body, {**headers, "content-encoding": "gzip"}  # says gzip, is not


@st.composite
def v1_bodies(draw) -> tuple[bytes, dict[str, str]]:
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
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    return draw(encoded(body, {"content-type": content_type} if content_type else {}))


@st.composite
def v2_bodies(draw, valid: list[dict]) -> tuple[bytes, dict[str, str]]:
    """Hostile V2 bodies; a third of them the model's `valid` inputs with one field made hostile."""
    kind = draw(st.integers(0, 14))
    headers = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["content-type"] = content_type
    if kind == 0:  # the binary tensor extension, with sizes drawn around the real data's length
        inputs, raw = draw(st.lists(tensors, max_size=3)), b""
        for tensor in inputs:
            data = draw(st.binary(max_size=96))
            raw += data
            size = st.sampled_from([len(data), len(data) + 8, len(data) - 1, 2**62, 2**64]) | json_values
            tensor["parameters"] = {"binary_data_size": draw(size)}
            if draw(st.integers(0, 4)):  # now and then an input keeps its "data" beside a size
                tensor.pop("data", None)
        raw += draw(st.sampled_from([b"", b"", b"\0" * 8]))  # bytes left over after the last tensor
        header = _dump({"inputs": inputs})
        headers["inference-header-content-length"] = draw(
            st.sampled_from([str(len(header))] * 3 + [str(len(header) + 3), "-1", "abc", str(10**9)])
        )
        return draw(encoded(header + raw, headers))
    if kind == 1:
        depth = draw(st.integers(100, 5000))
        prefix = b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": '
        return prefix + b"[" * depth + b"]" * depth + b"}]}", headers
    if kind == 2:
        return draw(encoded(draw(st.binary(max_size=64)), headers))
    if kind >= 10:
        return draw(encoded(_dump({"inputs": draw(one_field_hostile(valid))}), headers))
    if kind <= 7:
        body = {"inputs": draw(st.lists(tensors, max_size=3))}
        if draw(st.booleans()):
            body["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": names}), max_size=2) | json_values)
        if draw(st.booleans()):
            body["id"] = draw(json_values)
        return draw(encoded(_dump(body), headers))
    return draw(encoded(_dump(draw(json_values)), headers))


@st.composite
def one_field_hostile(draw, valid: list[dict]) -> list[dict]:
    """The valid inputs with one field, one shape dimension or one value replaced, and now and then a token
    orjson refuses beside them (so the whole body takes the slower parser, which keeps huge integers exact)."""
    inputs = [dict(tensor) for tensor in valid]
    tensor = inputs[draw(st.integers(0, len(inputs) - 1))]
    field = draw(st.sampled_from(["shape", "dim", "dim", "data", "value", "value", "datatype", "name"]))
    if field == "dim":
        shape = list(tensor["shape"])
        shape[draw(st.integers(0, len(shape) - 1))] = draw(dims)
        tensor["shape"] = shape
    elif field == "value" and tensor["data"]:
        data = list(tensor["data"])
        data[draw(st.integers(0, len(data) - 1))] = draw(scalars)
        tensor["data"] = data
    else:
        tensor[field if field != "value" else "data"] = draw(json_values)
    if draw(st.booleans()):
        tensor["parameters"] = {"note": draw(raw_tokens)}
    return inputs


def assert_refusal_or_answer(response: httpx.Response, body: bytes, headers: dict[str, str]) -> None:
    # The body and headers in full, to paste into a regression test.
    sent = f"sent headers={headers!r} body={body[:4000]!r}"
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}\n{sent}"
    if response.status_code >= 400:
        payload = response.json()
        assert isinstance(payload.get("error"), str) and payload["error"], f"{response.text[:300]}\n{sent}"


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
        body, headers = case
        assert_refusal_or_answer(server.post(server.v1_predict, content=body, headers=headers), body, headers)

    send()
    server.assert_healthy()


@pytest.mark.parametrize("key", FUZZED)
def test_v2_fuzz_gets_no_5xx(served, key):
    server = served[key]

    @FUZZ
    @given(case=v2_bodies(server.model.v2_inputs))
    def send(case):
        body, headers = case
        assert_refusal_or_answer(server.post(server.v2_infer, content=body, headers=headers), body, headers)

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
