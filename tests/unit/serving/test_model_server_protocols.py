"""Every kind of model MLflow loads, served to every KServe client, answers as the model does in-process.

The model server runs in this process (sandbox.serving.rest_app's `ModelApp` through httpx's ASGI
transport, `start_grpc` on a loopback port); the real deploy of each protocol is tests/integration.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig

from sandbox.serving import router
from sandbox.serving.launch import RouteVariant
from tests.unit.serving.answers import assert_outputs_match, infer_request, v2_json_outputs
from tests.unit.serving.conftest import Served, serve, stop
from tests.unit.serving.models import KEYS, MatrixModel


async def kserve_rest(
    transport: httpx.AsyncBaseTransport, base_url: str, name: str, model: MatrixModel, *, binary: bool
) -> dict[str, np.ndarray]:
    async with InferenceRESTClient(RESTConfig(transport=transport, protocol="v2")) as client:
        response = await client.infer(base_url, infer_request(name, model, binary=binary), model_name=name)
    return {output.name: output.as_numpy() for output in response.outputs}


async def kserve_grpc(address: str, name: str, model: MatrixModel) -> dict[str, np.ndarray]:
    client = InferenceGRPCClient(address)
    try:
        response = await client.infer(infer_request(name, model, binary=True))
    finally:
        await client.close()
    return {output.name: output.as_numpy() for output in response.outputs}


@pytest.mark.parametrize("key", KEYS)
def test_v1_and_v2_json_answers_equal_the_models_own_predictions(served, key):
    server = served[key]
    v1 = server.post(server.v1_predict, json=server.model.v1_body)
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == server.model.expected_v1()
    # No Content-Type at all: several real clients send none; a body that parses as JSON is JSON.
    body = httpx.Request("POST", "/", json={"inputs": server.model.v2_inputs}).content
    raw = server.post(server.v2_infer, content=body)
    assert "content-type" not in raw.request.headers
    assert_outputs_match(v2_json_outputs(raw), server.model)


@pytest.mark.parametrize("key", KEYS)
def test_kserve_clients_rest_json_rest_binary_and_grpc(served, key):
    server = served[key]
    model, name = server.model, server.name
    assert server.grpc_address.startswith("127.0.0.1:")
    assert_outputs_match(server.run(kserve_rest(server.transport, server.url, name, model, binary=False)), model)
    assert_outputs_match(server.run(kserve_rest(server.transport, server.url, name, model, binary=True)), model)
    assert_outputs_match(server.run(kserve_grpc(server.grpc_address, name, model)), model)


def test_v2_metadata_describes_inputs_and_outputs_from_the_signature(served):
    pipeline = served["pipeline_onehot"].get("/v2/models/m-pipeline-onehot").json()
    assert [(i["name"], i["datatype"]) for i in pipeline["inputs"]] == [
        ("city", "BYTES"),
        ("amount", "FP64"),
        ("count", "INT64"),
    ]
    frame = served["pyfunc_frame"].get("/v2/models/m-pyfunc-frame").json()
    assert [(o["name"], o["datatype"]) for o in frame["outputs"]] == [("label", "BYTES"), ("score", "FP64")]
    digits = served["digits"].get("/v2/models/m-digits").json()
    assert digits["inputs"][0]["shape"] == [-1, 8, 8]
    unknown = served["no_signature"].get("/v2/models/m-no-signature").json()
    assert unknown["inputs"] == [] and unknown["parameters"]["signature"] == "none"
    server = served["digits"].get("/v2").json()
    assert "binary_tensor_data" in server["extensions"]


def _split(name: str, variants: dict[str, tuple[Served, float]]) -> httpx.ASGITransport:
    """sandbox.serving.router's app for an A/B split in front of in-process model servers: the httpx client the
    router makes for itself reaches each variant through that server's ASGI transport (http://<its name>)."""
    mounts = {f"http://{server.name}": server.transport for server, _ in variants.values()}
    real_client = httpx.AsyncClient

    def client(**kwargs) -> httpx.AsyncClient:
        return real_client(**kwargs, mounts=mounts)

    with pytest.MonkeyPatch.context() as patch:  # only while create_app makes its client
        patch.setattr(router, "httpx", SimpleNamespace(**{**vars(httpx), "AsyncClient": client}))
        app = router.create_app(
            name,
            [
                RouteVariant(label, f"http://{server.name}", server.name, weight)
                for label, (server, weight) in variants.items()
            ],
        )
    return httpx.ASGITransport(app=app)


@pytest.mark.parametrize("key", KEYS)
def test_the_matrix_through_an_80_20_split(served, runner, key):
    model = served[key].model
    split = f"s-{key.replace('_', '-')}"
    # As `serve split` deploys it: a model server per variant (SPLIT-a, SPLIT-b), both on the same model here.
    a, b = serve(model, runner, f"{split}-a"), serve(model, runner, f"{split}-b")
    transport = _split(split, {"a": (a, 80), "b": (b, 20)})
    url = f"http://{split}"
    client = httpx.AsyncClient(transport=transport, base_url=url, timeout=30)
    try:
        v1 = a.run(client.post(f"/v1/models/{split}:predict", json=model.v1_body))
        assert v1.status_code == 200, v1.text
        assert v1.headers["x-model-variant"] in ("a", "b")
        assert v1.json()["predictions"] == model.expected_v1(), key
        raw = a.run(client.post(f"/v2/models/{split}/infer", json={"inputs": model.v2_inputs}))
        assert_outputs_match(v2_json_outputs(raw), model)
        assert raw.json()["model_name"] == split  # the split's name, not its variant's
        assert_outputs_match(a.run(kserve_rest(transport, url, split, model, binary=False)), model)
        assert_outputs_match(a.run(kserve_rest(transport, url, split, model, binary=True)), model)
        assert a.run(client.get("/v2")).status_code == 200
        metadata = a.run(client.get(f"/v2/models/{split}")).json()
        assert metadata["name"] == split and metadata["parameters"]["variants"] == ["a", "b"]
    finally:
        a.run(client.aclose())
        stop(a)
        stop(b)


def test_a_failure_inside_the_model_is_a_500_with_its_error_and_the_server_goes_on(served, caplog):
    # No signature: nothing to check the width against, so the model itself refuses 3 features.
    server = served["no_signature"]
    caplog.set_level(logging.INFO, logger="sandbox.model_server")
    failed = server.post(server.v1_predict, json={"instances": [[1.0, 2.0, 3.0]]})
    assert failed.status_code == 500
    assert "the model failed on this input: ValueError" in failed.json()["error"]
    server.assert_healthy()
    logged = [r.getMessage() for r in caplog.records if "the model failed on this input" in r.getMessage()]
    assert len(logged) == 1, logged  # logged once
    assert logged[0].startswith(f"POST /v1/models/{server.name}:predict 500 ")
