"""What `predict` returned, as named arrays (`Output`), and as the answer each protocol gives: V1 predictions, V2
outputs in JSON, and the V2 metadata of the outputs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from sandbox.serving.model_io.schema import COLUMN_V2_DATATYPES, v2_datatype


@dataclass(frozen=True)
class Output:
    """One named output of a prediction (V2 output; V1 gives one, or records of several)."""

    name: str
    array: np.ndarray

    @property
    def datatype(self) -> str:
        return v2_datatype(self.array.dtype)


def model_outputs(predictions: Any) -> list[Output]:
    """Whatever pyfunc's predict returned, as named arrays (one per V2 output)."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return [Output(str(name), _output_array(predictions[name])) for name in predictions.columns]
    if isinstance(predictions, dict):
        return [Output(str(name), _output_array(value)) for name, value in predictions.items()]
    if isinstance(predictions, pd.Series):
        return [Output("predict", _output_array(predictions))]
    return [Output("predict", _output_array(predictions))]


def _output_array(value: Any) -> np.ndarray:
    import pandas as pd

    if isinstance(value, pd.Series):
        if pd.api.types.is_datetime64_any_dtype(value.dtype):
            return np.array([v.isoformat() if v is not pd.NaT else None for v in value], dtype=object)
        value = value.to_numpy()
    array = np.asarray(value)
    if array.dtype.kind in "USMm":
        array = array.astype(str).astype(object) if array.dtype.kind != "S" else array.astype(object)
    if array.ndim == 0:
        array = array.reshape(1)
    return array


def output_rows(outputs: list[Output]) -> int | None:
    lengths = {len(output.array) for output in outputs}
    return lengths.pop() if len(lengths) == 1 else None


def slice_outputs(outputs: list[Output], start: int, stop: int) -> list[Output]:
    return [Output(output.name, output.array[start:stop]) for output in outputs]


def v1_predictions(outputs: list[Output]) -> list:
    """V1 `predictions`: the single output's values, or one record per row for named outputs."""
    if len(outputs) == 1:
        return _jsonable(outputs[0].array)
    columns = [(output.name, _jsonable(output.array)) for output in outputs]
    rows = output_rows(outputs)
    if rows is None:
        return [{name: values for name, values in columns}]
    return [{name: values[row] for name, values in columns} for row in range(rows)]


def v2_outputs_json(outputs: list[Output]) -> list[dict[str, Any]]:
    return [
        {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.array.shape),
            "data": _jsonable(output.array.reshape(-1)),
        }
        for output in outputs
    ]


def _jsonable(array: np.ndarray) -> list:
    if array.dtype.kind == "O":
        return [_json_scalar(v) for v in array.tolist()] if array.ndim == 1 else [_jsonable(a) for a in array]
    return array.tolist()


def _json_scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def signature_outputs_metadata(schema) -> list[dict[str, Any]]:
    """The V2 metadata of the outputs an MLflow signature declares."""
    entries = []
    if schema.is_tensor_spec():
        for spec in schema.inputs:
            entries.append(
                {"name": spec.name or "predict", "datatype": v2_datatype(spec.type), "shape": list(spec.shape)}
            )
        return entries
    specs = schema.inputs
    for spec in specs:
        type_name = getattr(spec.type, "name", "json")
        entries.append(
            {
                "name": spec.name or "predict",
                "datatype": COLUMN_V2_DATATYPES.get(type_name, "BYTES"),
                "shape": [-1],
            }
        )
    return entries


def outputs_metadata_from(outputs: list[Output]) -> list[dict[str, Any]]:
    """The V2 metadata of outputs a prediction gave (where the signature declares none)."""
    return [{"name": o.name, "datatype": o.datatype, "shape": [-1, *o.array.shape[1:]]} for o in outputs]
