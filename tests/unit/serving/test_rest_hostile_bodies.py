"""Regression bodies a fresh fuzz generator found (issue 25): huge shapes, lying binary-extension headers and
compressed bodies, each answered with a 4xx that names the problem, the server healthy after.

The shared ASGI layer's decoding (`BodyLimit`, which the router wraps its app in as well) is tested on a bare
echo app at the end."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.serving.asgi import BodyLimit

KEY = "forest_numpy"  # a [rows, 8] FP64 tensor model that holds float64 only within float32's range
ROW = [0.5] * 8
NAN_ELSEWHERE = '"id": "x", "parameters": {"note": NaN}'


def _v2(shape: str, extra: str = NAN_ELSEWHERE) -> bytes:
    """A V2 body with `shape` as raw JSON text (huge integers stay exact) and tokens orjson refuses."""
    data = json.dumps(ROW)
    tensor = f'{{"name": "input-0", "shape": {shape}, "datatype": "FP64", "data": {data}}}'
    return f'{{"inputs": [{tensor}], {extra}}}'.encode()


HUGE_SHAPES = {
    "2**64 beside a NaN": _v2(f"[{2**64}, 8]"),
    "2**64-1 (orjson keeps it an int)": _v2(f"[{2**64 - 1}, 8]", '"id": "x"'),
    "10**309": _v2(f"[1, {10**309}]", '"id": "x"'),
    "int64 max times 8 (wraps in numpy)": _v2(f"[{2**63 - 1}, 8]"),
    "a lone surrogate elsewhere": _v2(f"[{2**70}, 1]", '"id": "\\ud800"'),
}


@pytest.mark.parametrize("body", HUGE_SHAPES.values(), ids=HUGE_SHAPES.keys())
def test_huge_shapes_are_a_400_naming_the_shape(served, body):
    server = served[KEY]
    response = server.post(server.v2_infer, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    message = response.json()["error"]
    assert "shape" in message and "at most" in message, message
    server.assert_healthy()


def _binary(header_inputs: list[dict], raw: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": header_inputs}).encode()
    return header + raw, {"inference-header-content-length": str(len(header))}


def _tensor(size: int, **extra) -> dict:
    tensor = {"name": "input-0", "shape": [1, 8], "datatype": "FP64", "parameters": {"binary_data_size": size}}
    return {**tensor, **extra}


RAW = struct.pack("<8d", *ROW)
LYING_HEADERS = {
    "size 8 bytes over the data": _binary([_tensor(len(RAW) + 8)], RAW),
    "size 2**62": _binary([_tensor(2**62)], RAW),
    "bytes left after the last tensor": _binary([_tensor(len(RAW))], RAW + b"\0" * 8),
    "both data and binary_data_size": _binary([_tensor(len(RAW), data=[9.0] * 8)], RAW),
}


@pytest.mark.parametrize("case", LYING_HEADERS.values(), ids=LYING_HEADERS.keys())
def test_lying_binary_headers_are_a_400_naming_the_input(served, case):
    server = served[KEY]
    body, headers = case
    response = server.post(server.v2_infer, content=body, headers=headers)
    assert response.status_code == 400, response.text[:300]
    assert "input-0" in response.json()["error"]
    server.assert_healthy()


def test_an_honest_binary_body_is_answered(served):
    server = served[KEY]
    body, headers = _binary([_tensor(len(RAW))], RAW)
    assert server.post(server.v2_infer, content=body, headers=headers).status_code == 200


def test_a_float32_model_names_float32_when_refusing_a_binary_fp64(served):
    server = served[KEY]
    body, headers = _binary([_tensor(len(RAW))], struct.pack("<8d", 1e308, *ROW[1:]))
    response = server.post(server.v2_infer, content=body, headers=headers)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "float32" in message and "float64 holds" not in message, message


COMPRESS = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.mark.parametrize("encoding", COMPRESS)
def test_compressed_bodies_are_decoded(served, encoding):
    server = served[KEY]
    body = COMPRESS[encoding](json.dumps(server.model.v1_body).encode())
    headers = {"content-type": "application/json", "content-encoding": encoding}
    response = server.post(server.v1_predict, content=body, headers=headers)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["predictions"] == server.model.expected_v1()


# --------------------------------------------------------------------------- the shared layer, on an echo app


async def _echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, headers={"x-seen-encoding": request.headers.get("content-encoding", "")})


def _post(body, headers: dict[str, str], limit: int = 1024) -> httpx.Response:
    app = BodyLimit(Starlette(routes=[Route("/", _echo, methods=["POST"])]), limit=limit)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/", content=body, headers=headers)

    import asyncio

    return asyncio.run(go())


async def _chunked(body: bytes, size: int = 100):
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("encoding", COMPRESS)
def test_the_app_gets_the_decoded_body_without_its_encoding(encoding):
    text = b'{"instances": [[1, 2]]}'
    response = _post(COMPRESS[encoding](text), {"content-encoding": encoding})
    assert response.status_code == 200
    assert response.content == text and response.headers["x-seen-encoding"] == ""


@pytest.mark.parametrize("encoding", COMPRESS)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_zip_bomb_is_a_413(encoding, chunked):
    bomb = COMPRESS[encoding](b" " * (64 * 1024 * 1024))  # 64 MiB of spaces in ~64 KiB
    body = _chunked(bomb, 4096) if chunked else bomb
    response = _post(body, {"content-encoding": encoding}, limit=1024 * 1024)
    assert response.status_code == 413 and "decompressed" in response.json()["error"]


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br", "compress"])
def test_other_encodings_are_a_415(encoding):
    response = _post(b"{}", {"content-encoding": encoding})
    assert response.status_code == 415 and "gzip" in response.json()["error"]


@pytest.mark.parametrize("body", [b"not gzip", gzip.compress(b"{}")[:-6], b""])
def test_broken_compressed_bodies_are_a_400(body):
    response = _post(body, {"content-encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["error"]


def test_identity_is_passed_on_as_sent():
    response = _post(b"{}", {"content-encoding": "identity"})
    assert response.status_code == 200 and response.content == b"{}"
