"""NVIDIA's `tritonclient.http` and KServe's `InferenceRESTClient` against a model server directly, every model of
the matrix, over real HTTP on loopback: server and model metadata, infer with JSON and with binary tensors.

(Through a split: test_router_clients.py; gRPC: test_grpc_clients.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, RESTConfig

from tests.unit.serving.answers import assert_outputs_match, infer_request
from tests.unit.serving.conftest import serve, stop
from tests.unit.serving.models import KEYS, MatrixModel
from tests.unit.serving.test_router_clients import listen, shut, with_triton


@dataclass
class Direct:
    name: str
    model: MatrixModel
    address: str  # the model server's HOST:PORT


@pytest.fixture
def direct(request, served, runner) -> Iterator[Direct]:
    """One matrix model served by its own model server on a real loopback port."""
    model = served[request.param].model
    server = serve(model, runner, f"d-{request.param.replace('_', '-')}")
    try:
        listening = runner.run(listen(server.transport.app, lifespan="off"))  # the model is loaded already
        try:
            yield Direct(server.name, model, listening[2])
        finally:
            runner.run(shut(*listening[:2]))
    finally:
        stop(server)


def ask_with_triton(direct: Direct) -> dict:
    """What the split's test asks (`with_triton`: metadata, infer with JSON and binary), and liveness and readiness."""
    client = triton.InferenceServerClient(direct.address, network_timeout=30.0)
    try:
        health = {"live": client.is_server_live(), "ready": client.is_model_ready(direct.name)}
    finally:
        client.close()
    return {**health, **with_triton(direct)}


@pytest.mark.parametrize("direct", KEYS, indirect=True)
def test_tritonclient_http_reads_metadata_and_json_and_binary_answers(direct, runner):
    answers = runner.run(asyncio.to_thread(ask_with_triton, direct))
    assert answers["live"] and answers["ready"]
    assert "binary_tensor_data" in answers["server"]["extensions"]
    assert answers["model"]["name"] == direct.name
    for binary in (False, True):
        header, outputs = answers[binary]
        assert header["model_name"] == direct.name, (binary, header)
        assert_outputs_match(outputs, direct.model)


async def ask_with_kserve(direct: Direct, *, binary: bool):
    url = f"http://{direct.address}"
    headers: dict[str, str] = {}
    request = infer_request(direct.name, direct.model, binary=binary)
    if binary:
        request.parameters = {"binary_data_output": True}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
        assert await client.is_server_ready(url)
        assert await client.is_model_ready(url, direct.name)
        response = await client.infer(url, request, model_name=direct.name, response_headers=headers)
    return response, headers


@pytest.mark.parametrize("direct", KEYS, indirect=True)
def test_kserve_rest_client_gets_json_and_binary_answers(direct, runner):
    for binary in (False, True):
        response, headers = runner.run(ask_with_kserve(direct, binary=binary))
        assert response.model_name == direct.name, binary
        assert_outputs_match({o.name: o.as_numpy() for o in response.outputs}, direct.model)
        if binary:
            assert int(headers["inference-header-content-length"]) < int(headers["content-length"])
