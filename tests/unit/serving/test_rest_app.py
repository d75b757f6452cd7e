"""The model server's REST handlers called alone: a `ModelApp` method, a request, a stand-in model (no MLflow,
no ASGI app, no batcher). tests/unit/serving/test_model_server_protocols.py serves real models through the app."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from starlette.requests import Request

from sandbox.serving.mlflow_model import ModelFailure
from sandbox.serving.model_io import ModelInput, ModelIO, Output
from sandbox.serving.rest_app import ModelApp


class StandIn:
    """What ModelApp uses of an MLflowModel: a model without a signature whose prediction is each row's sum."""

    name = "m"
    model_uri = "models:/m/1"
    model_version = "1"

    def __init__(self, *, ready: bool = True, fails: bool = False):
        self.ready = ready
        self.fails = fails
        self.io = ModelIO.from_signature(None)
        self.calls: list[tuple[ModelInput, str | None, str | None]] = []

    async def infer(self, item: ModelInput, *, request_id: str | None, variant: str | None) -> list[Output]:
        self.calls.append((item, request_id, variant))
        if self.fails:
            raise ModelFailure(ValueError("three features, two expected"))
        return [Output("predict", np.asarray(item.value).sum(axis=1))]

    def get_input_types(self) -> list[dict]:
        return []

    def get_output_types(self) -> list[dict]:
        return []


def request(method: str, path: str, path_params: dict[str, str], body: object = None, **headers: str) -> Request:
    raw = b"" if body is None else json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "path_params": path_params,
        "query_string": b"",
        "headers": [(key.replace("_", "-").encode(), value.encode()) for key, value in headers.items()],
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(scope, receive)


def answer(response) -> tuple[int, object]:
    return response.status_code, json.loads(response.body)


def test_v1_predict_answers_the_models_outputs_with_the_routers_request_id_and_variant():
    model = StandIn()
    app = ModelApp(model)
    post = request(
        "POST",
        "/v1/models/m:predict",
        {"target": "m:predict"},
        {"instances": [[1, 2], [3, 4]]},
        x_request_id="r-1",
        x_model_variant="b",
    )
    assert answer(asyncio.run(app.v1_predict(post))) == (200, {"predictions": [3, 7]})
    ((item, request_id, variant),) = model.calls
    assert (item.rows, request_id, variant) == (2, "r-1", "b")


def test_v2_infer_answers_named_outputs_under_the_bodys_id():
    app = ModelApp(StandIn())
    body = {"id": "r-2", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2.5]}]}
    status, payload = answer(asyncio.run(app.v2_infer(request("POST", "/v2/models/m/infer", {"model": "m"}, body))))
    assert status == 200
    assert payload == {
        "model_name": "m",
        "model_version": "1",
        "id": "r-2",
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [1], "data": [4.0]}],
    }


def test_refusals_name_the_problem_and_never_reach_the_model():
    model = StandIn()
    app = ModelApp(model)
    other = asyncio.run(app.v2_infer(request("POST", "/v2/models/x/infer", {"model": "x"}, {"inputs": []})))
    assert answer(other) == (404, {"error": "model 'x' is not served here; this server serves 'm'"})
    verb = asyncio.run(app.v1_predict(request("POST", "/v1/models/m:explain", {"target": "m:explain"}, {})))
    assert answer(verb) == (404, {"error": "unsupported verb 'explain'; V1 serves :predict"})
    empty = asyncio.run(app.v2_infer(request("POST", "/v2/models/m/infer", {"model": "m"}, {"inputs": []})))
    assert answer(empty) == (400, {"error": '"inputs" is empty: send at least one input tensor'})
    assert model.calls == []


def test_a_failure_inside_the_model_is_a_500_with_its_error():
    app = ModelApp(StandIn(fails=True))
    post = request("POST", "/v1/models/m:predict", {"target": "m:predict"}, {"instances": [[1, 2, 3]]})
    status, payload = answer(asyncio.run(app.v1_predict(post)))
    assert status == 500
    assert payload == {"error": "the model failed on this input: ValueError: three features, two expected"}


def test_readiness_follows_the_model():
    ready, loading = ModelApp(StandIn()), ModelApp(StandIn(ready=False))
    assert answer(asyncio.run(ready.ready(request("GET", "/v2/health/ready", {})))) == (200, {"ready": True})
    assert answer(asyncio.run(loading.ready(request("GET", "/v2/health/ready", {})))) == (503, {"ready": False})
    model_ready = asyncio.run(loading.v2_model_ready(request("GET", "/v2/models/m/ready", {"model": "m"})))
    assert answer(model_ready) == (503, {"name": "m", "ready": False})
    metadata = asyncio.run(ready.v2_metadata(request("GET", "/v2/models/m", {"model": "m"})))
    status, payload = answer(metadata)
    assert status == 200 and payload["versions"] == ["1"] and payload["parameters"]["signature"] == "none"
