"""What a served answer must equal: the V2 request a client builds for a matrix model, and the comparison of the
outputs it reads back with the model's own in-process answer (shared by the protocol, split and client tests)."""

from __future__ import annotations

import httpx
import numpy as np
from kserve import InferInput, InferRequest

from sandbox.serving.model_io import V2_DTYPES
from tests.unit.serving.models import MatrixModel


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
