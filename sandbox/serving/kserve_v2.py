"""KServe's V2 types and the model server's: an `InferInput` (gRPC, or the REST binary extension) as a `V2Tensor`,
and a prediction's `Output`s as an `InferResponse`."""

from __future__ import annotations

from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferResponse

from sandbox.serving.model_io.outputs import Output
from sandbox.serving.model_io.schema import V2Tensor
from sandbox.wire import PayloadError


def tensor_from_infer_input(infer_input) -> V2Tensor:
    """One of KServe's decoded inputs as it came: raw bytes as a numpy array of its datatype and shape."""
    data = infer_input.data
    if getattr(infer_input, "_raw_data", None) is not None or isinstance(data, np.ndarray):
        try:
            data = infer_input.as_numpy()
        except Exception as exc:  # noqa: BLE001 - raw bytes that do not match their datatype and shape
            raise PayloadError(
                f"input {infer_input.name!r}: its raw data does not decode as {infer_input.datatype} "
                f"{list(infer_input.shape)} ({type(exc).__name__}: {exc})"
            ) from None
    elif infer_input.datatype == "BYTES" and isinstance(data, list):
        data = [value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value for value in data]
    return V2Tensor(infer_input.name, infer_input.datatype, list(infer_input.shape), data)


def infer_response(
    model_name: str, model_version: str, outputs: list[Output], request_id: str | None, *, binary: bool
) -> InferResponse:
    """The V2 answer, its outputs as JSON data or (binary) as raw bytes after the JSON header."""
    infer_outputs = []
    for output in outputs:
        array = output.array
        if output.datatype == "BYTES":
            array = np.array([_bytes_value(v) for v in array.reshape(-1).tolist()], dtype=object).reshape(array.shape)
        infer_output = InferOutput(name=output.name, shape=list(array.shape), datatype=output.datatype)
        infer_output.set_data_from_numpy(array, binary_data=binary)
        infer_outputs.append(infer_output)
    return InferResponse(
        response_id=request_id or "",
        model_name=model_name,
        model_version=model_version or None,
        infer_outputs=infer_outputs,
        use_binary_outputs=binary,
    )


def _bytes_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")
