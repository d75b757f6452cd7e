"""A real deploy for the protocols test_serving.py does not already call: V2 REST binary and V2 gRPC.

The model matrix (six kinds of model, every KServe client, the 80/20 split) and the fuzzers run in-process in
tests/unit/serving. What only a real deploy shows is here and in test_serving.py, which calls V1 REST and V2 REST
JSON on its `fraud` deployment: the model server started by `serve deploy`, loading a registered model, answering
the KServe clients over real sockets, V2 binary on REST and gRPC on its own loopback port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import mlflow
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from sandbox.serving.reference_model import synthetic_data

pytestmark = pytest.mark.integration

DEPLOYMENT = "mm-fraud"


def _request(frame, *, binary: bool) -> InferRequest:
    rows = frame.to_numpy()
    infer_input = InferInput("input-0", list(rows.shape), "FP64")
    infer_input.set_data_from_numpy(rows, binary_data=binary)
    return InferRequest(model_name=DEPLOYMENT, infer_inputs=[infer_input])


@pytest.fixture
def deployed(platform, monkeypatch) -> Iterator[dict]:
    """`serve deploy mm-fraud` of fraud-detector v1; its inference endpoint, undeployed after."""
    endpoints = platform.endpoints()
    for key, value in endpoints.env().items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(endpoints.mlflow_tracking_uri)
    platform.cli("serve", "deploy", DEPLOYMENT, "--model", "models:/fraud-detector/1")
    try:
        yield platform.status()["endpoints"]["inference"][DEPLOYMENT]
    finally:
        platform.cli("serve", "undeploy", DEPLOYMENT)


def _expected(frame) -> list:
    return mlflow.pyfunc.load_model("models:/fraud-detector/1").predict(frame).tolist()


def test_v2_rest_binary_and_grpc_on_a_real_deploy_answer_as_the_model_does(deployed, platform):
    # One deploy for both (a deploy costs ~20 s; the answers, milliseconds): each protocol's rows are its own.
    binary_rows, _ = synthetic_data(rows=20, seed=11)
    grpc_rows, _ = synthetic_data(rows=20, seed=12)
    assert deployed["grpc"].startswith("127.0.0.1:"), deployed
    auth = platform.endpoints().serving_headers()  # the serving token: HTTP header, and gRPC metadata
    metadata = [(key.lower(), value) for key, value in auth.items()]

    async def rest_binary():
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
            request = _request(binary_rows, binary=True)
            return await client.infer(deployed["url"], request, model_name=DEPLOYMENT, headers=dict(auth))

    async def grpc():
        client = InferenceGRPCClient(deployed["grpc"])
        try:
            return await client.infer(_request(grpc_rows, binary=True), headers=metadata)
        finally:
            await client.close()

    for protocol, call, rows in (("V2 REST binary", rest_binary, binary_rows), ("V2 gRPC", grpc, grpc_rows)):
        response = asyncio.run(call())
        assert [output.name for output in response.outputs] == ["predict"], protocol
        assert response.outputs[0].as_numpy().reshape(-1).tolist() == _expected(rows), protocol
