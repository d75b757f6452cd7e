"""Every kind of model MLflow loads, served to every KServe client, answers as the model does in-process."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from sandbox.serving.model_io import V2_DTYPES
from tests.integration.model_matrix import MatrixModel

pytestmark = pytest.mark.integration

KEYS = ["forest_numpy", "pipeline_onehot", "pyfunc_proba", "pyfunc_frame", "no_signature", "digits"]


def infer_request(model_name: str, model: MatrixModel, *, binary: bool) -> InferRequest:
    inputs = []
    for tensor in model.v2_inputs:
        array = np.array(tensor["data"], dtype=V2_DTYPES[tensor["datatype"]]).reshape(tensor["shape"])
        infer_input = InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    return InferRequest(model_name=model_name, infer_inputs=inputs)


def as_text(array: np.ndarray) -> list:
    if array.dtype == object:
        return [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]
    return array.reshape(-1).tolist()


def assert_outputs_match(outputs: dict[str, np.ndarray], model: MatrixModel) -> None:
    expected = model.expected_outputs()
    assert set(outputs) == set(expected), f"outputs {sorted(outputs)} != {sorted(expected)}"
    for name, want in expected.items():
        got = outputs[name]
        assert list(got.shape) == list(want.shape), f"{name}: shape {got.shape} != {want.shape}"
        assert as_text(got) == as_text(np.asarray(want)), f"{name}: {as_text(got)} != {as_text(want)}"


def v2_json_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.array(o["data"], dtype=object if o["datatype"] == "BYTES" else None).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


async def kserve_rest(base_url: str, name: str, model: MatrixModel, *, binary: bool) -> dict[str, np.ndarray]:
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
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
def test_v1_and_v2_json_answers_equal_the_models_own_predictions(matrix_stack, key):
    model = matrix_stack.models[key]
    endpoint = matrix_stack.endpoint(key)
    v1 = httpx.post(endpoint["v1_predict"], json=model.v1_body, timeout=30)
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == model.expected_v1()
    # No Content-Type at all: several real clients send none; a body that parses as JSON is JSON.
    raw = httpx.post(endpoint["v2_infer"], content=httpx.Request("POST", "/", json={"inputs": model.v2_inputs}).content)
    assert_outputs_match(v2_json_outputs(raw), model)


@pytest.mark.parametrize("key", KEYS)
def test_kserve_clients_rest_json_rest_binary_and_grpc(matrix_stack, key):
    model, name = matrix_stack.models[key], matrix_stack.deployment_name(key)
    endpoint = matrix_stack.endpoint(key)
    assert endpoint["grpc"].startswith("127.0.0.1:")
    assert_outputs_match(asyncio.run(kserve_rest(endpoint["url"], name, model, binary=False)), model)
    assert_outputs_match(asyncio.run(kserve_rest(endpoint["url"], name, model, binary=True)), model)
    assert_outputs_match(asyncio.run(kserve_grpc(endpoint["grpc"], name, model)), model)


def test_v2_metadata_describes_inputs_and_outputs_from_the_signature(matrix_stack):
    pipeline = httpx.get(f"{matrix_stack.endpoint('pipeline_onehot')['url']}/v2/models/m-pipeline-onehot").json()
    assert [(i["name"], i["datatype"]) for i in pipeline["inputs"]] == [
        ("city", "BYTES"),
        ("amount", "FP64"),
        ("count", "INT64"),
    ]
    frame = httpx.get(f"{matrix_stack.endpoint('pyfunc_frame')['url']}/v2/models/m-pyfunc-frame").json()
    assert [(o["name"], o["datatype"]) for o in frame["outputs"]] == [("label", "BYTES"), ("score", "FP64")]
    digits = httpx.get(f"{matrix_stack.endpoint('digits')['url']}/v2/models/m-digits").json()
    assert digits["inputs"][0]["shape"] == [-1, 8, 8]
    unknown = httpx.get(f"{matrix_stack.endpoint('no_signature')['url']}/v2/models/m-no-signature").json()
    assert unknown["inputs"] == [] and unknown["parameters"]["signature"] == "none"
    server = httpx.get(f"{matrix_stack.endpoint('digits')['url']}/v2").json()
    assert "binary_tensor_data" in server["extensions"]


def test_the_matrix_through_an_80_20_split(matrix_stack):
    stack = matrix_stack.stack
    for key in KEYS:
        model = matrix_stack.models[key]
        split = f"s-{key.replace('_', '-')}"
        stack.cli("serve", "split", split, "--variant", f"a={model.uri}:80", "--variant", f"b={model.uri}:20")
        try:
            endpoint = stack.status()["endpoints"]["inference"][split]
            v1 = httpx.post(endpoint["v1_predict"], json=model.v1_body, timeout=30)
            assert v1.status_code == 200, v1.text
            assert v1.headers["x-model-variant"] in ("a", "b")
            assert v1.json()["predictions"] == model.expected_v1(), key
            raw = httpx.post(endpoint["v2_infer"], json={"inputs": model.v2_inputs}, timeout=30)
            assert_outputs_match(v2_json_outputs(raw), model)
            assert_outputs_match(asyncio.run(kserve_rest(endpoint["url"], split, model, binary=False)), model)
            assert_outputs_match(asyncio.run(kserve_rest(endpoint["url"], split, model, binary=True)), model)
            assert httpx.get(f"{endpoint['url']}/v2").status_code == 200
            metadata = httpx.get(f"{endpoint['url']}/v2/models/{split}").json()
            assert metadata["name"] == split and metadata["parameters"]["variants"] == ["a", "b"]
        finally:
            stack.cli("serve", "undeploy", split)


def test_a_failure_inside_the_model_is_a_500_with_its_error_and_the_server_goes_on(matrix_stack):
    # No signature: nothing to check the width against, so the model itself refuses 3 features.
    endpoint = matrix_stack.endpoint("no_signature")
    logged_before = matrix_stack.stack.cli("logs", "m-no-signature").stdout.count("the model failed on this input")
    failed = httpx.post(endpoint["v1_predict"], json={"instances": [[1.0, 2.0, 3.0]]}, timeout=30)
    assert failed.status_code == 500
    assert "the model failed on this input: ValueError" in failed.json()["error"]
    model = matrix_stack.models["no_signature"]
    assert httpx.post(endpoint["v1_predict"], json=model.v1_body, timeout=30).json()["predictions"] == (
        model.expected_v1()
    )
    log = matrix_stack.stack.cli("logs", "m-no-signature").stdout
    assert log.count("the model failed on this input") == logged_before + 1, log  # logged once, whatever came before
