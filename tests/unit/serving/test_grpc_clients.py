"""The V2 gRPC server with the clients teams use against KServe: NVIDIA's `tritonclient.grpc` (in a subprocess,
see tests/unit/serving/tritonclient_grpc.py) and KServe's `InferenceGRPCClient`, on every model of the matrix;
the answer's form follows the request's (raw in, raw out); a server bug is INTERNAL, not the client's fault."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve import InferenceGRPCClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.infer_type import InferResponse

from tests.unit.serving.answers import assert_outputs_match, infer_request
from tests.unit.serving.models import KEYS

TRITON_SCRIPT = Path(__file__).with_name("tritonclient_grpc.py")


def tritonclient_grpc(server, name: str) -> dict:
    """tritonclient.grpc's metadata and raw-input infer, run while the server's loop runs."""
    request = json.dumps({"model": name, "inputs": server.model.v2_inputs})

    def call() -> subprocess.CompletedProcess:
        command = [sys.executable, str(TRITON_SCRIPT), server.grpc_address]
        return subprocess.run(command, input=request, capture_output=True, text=True, timeout=120)

    done = server.run(asyncio.to_thread(call))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def rest_metadata(server) -> dict:
    response = server.get(f"/v2/models/{server.name}")
    assert response.status_code == 200, response.text
    return response.json()


def tensors(entries: list[dict]) -> list[tuple]:
    return [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in entries]


@pytest.mark.parametrize("key", KEYS)
def test_tritonclient_grpc_reads_metadata_and_a_raw_answer(served, key):
    server = served[key]
    answer = tritonclient_grpc(server, server.name)
    assert answer["server"]["extensions"]
    rest = rest_metadata(server)
    assert answer["model"]["name"] == server.name
    assert tensors(answer["model"].get("inputs", [])) == tensors(rest["inputs"])
    assert tensors(answer["model"].get("outputs", [])) == tensors(rest["outputs"])
    outputs = {
        name: np.array(o["data"], dtype=object if o["data"] and isinstance(o["data"][0], str) else None).reshape(
            o["shape"]
        )
        for name, o in answer["outputs"].items()
    }
    assert_outputs_match(outputs, server.model)
    assert answer["raw"] == len(outputs)


async def kserve_grpc_metadata_and_infer(server) -> tuple:
    client = InferenceGRPCClient(server.grpc_address)
    try:
        stub = client._client_stub  # the client has no metadata calls of its own: its stub does
        server_metadata = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30)
        model_metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=server.name), timeout=30)
        response = await client.infer(infer_request(server.name, server.model, binary=True))
    finally:
        await client.close()
    return server_metadata, model_metadata, {o.name: o.as_numpy() for o in response.outputs}


@pytest.mark.parametrize("key", KEYS)
def test_kserve_grpc_client_reads_metadata_and_answers(served, key):
    server = served[key]
    server_metadata, model_metadata, outputs = server.run(kserve_grpc_metadata_and_infer(server))
    assert server_metadata.extensions
    rest = rest_metadata(server)
    assert model_metadata.name == server.name
    assert tensors([{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in model_metadata.inputs]) == (
        tensors(rest["inputs"])
    )
    assert tensors([{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in model_metadata.outputs]) == (
        tensors(rest["outputs"])
    )
    assert_outputs_match(outputs, server.model)


def test_rest_metadata_keeps_the_mlflow_types(served):
    inputs = rest_metadata(served["pipeline_onehot"])["inputs"]
    assert [i["parameters"]["mlflow_type"] for i in inputs] == ["string", "double", "long"]


async def _stub_call(address: str, method: str, request):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        return await getattr(stub, method)(request, timeout=30)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), raw=st.booleans())
def test_the_answer_takes_the_form_the_request_used(served, key, raw):
    server = served[key]
    request = infer_request(server.name, server.model, binary=raw).to_grpc()
    assert bool(request.raw_input_contents) == raw
    response = server.run(_stub_call(server.grpc_address, "ModelInfer", request))
    assert len(response.raw_output_contents) == (len(response.outputs) if raw else 0)
    for output in response.outputs:
        assert output.HasField("contents") != raw, output
        assert "binary_data_size" not in output.parameters  # the REST extension's word, not gRPC's
    assert_outputs_match({o.name: o.as_numpy() for o in InferResponse.from_grpc(response).outputs}, server.model)


def test_a_server_bug_is_internal_and_logged_not_the_clients_fault(served, monkeypatch, caplog):
    server = served["pipeline_onehot"]
    caplog.set_level(logging.INFO, logger="sandbox.model_server")

    def broken():
        raise ValueError("a bug in the server")

    monkeypatch.setattr(server.server, "get_output_types", broken)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        server.run(_stub_call(server.grpc_address, "ModelMetadata", pb.ModelMetadataRequest(name=server.name)))
    assert failed.value.code() == grpc.StatusCode.INTERNAL, failed.value.details()
    assert any("ValueError: a bug in the server" in r.getMessage() for r in caplog.records if r.levelno >= 40)


def test_bytes_that_do_not_decode_are_the_clients_fault(served):
    server = served["forest_numpy"]
    request = pb.ModelInferRequest(model_name=server.name)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 8])
    request.raw_input_contents.append(b"\x00" * 7)  # 7 bytes for 8 float64s
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        server.run(_stub_call(server.grpc_address, "ModelInfer", request))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "input-0" in refused.value.details()
    request = pb.ModelInferRequest(model_name=server.name)
    request.inputs.add(name="input-0", datatype="NOPE", shape=[1, 8])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        server.run(_stub_call(server.grpc_address, "ModelInfer", request))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    server.assert_healthy()
