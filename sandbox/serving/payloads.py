"""Tabular inference payloads in KServe's V1 and V2 (Open Inference Protocol) shapes.

Pure functions, shared by the model server (parse and validate) and the load
generator (build). A bad payload raises `PayloadError` with a message that says
what is wrong and where, which the server turns into a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_ROWS = 10_000  # rows in one request; more is a 413-worthy mistake, not a batch
MAX_BODY_BYTES = 8 * 1024 * 1024

# MLflow ColSpec types the server accepts, and the V2 datatypes that carry them.
NUMERIC_MLFLOW_TYPES = {"double", "float", "long", "integer", "boolean"}
V2_NUMERIC_DATATYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class PayloadError(ValueError):
    """The request body does not fit the model; the message is shown to the client."""


@dataclass(frozen=True)
class FeatureSchema:
    """The columns a tabular model expects, in order."""

    names: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.names)

    @classmethod
    def from_mlflow_signature(cls, signature) -> FeatureSchema:
        if signature is None or signature.inputs is None:
            raise PayloadError("the model has no input signature; log it with one (mlflow infer_signature)")
        names, types = [], []
        for position, spec in enumerate(signature.inputs.inputs):
            type_name = getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", "")))
            if type_name not in NUMERIC_MLFLOW_TYPES:
                raise PayloadError(
                    f"input {spec.name or position!r} has type {type_name}; only numeric tabular models are served"
                )
            names.append(spec.name or f"f{position}")
            types.append(type_name)
        return cls(tuple(names), tuple(types))

    def v2_inputs_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.width]}]


def _rows_to_array(rows: Any, schema: FeatureSchema, where: str) -> np.ndarray:
    if not isinstance(rows, list):
        raise PayloadError(f"'{where}' must be a list of rows, got {type(rows).__name__}")
    if not rows:
        raise PayloadError(f"'{where}' is empty: send at least one row")
    if len(rows) > MAX_ROWS:
        raise PayloadError(f"'{where}' has {len(rows)} rows; at most {MAX_ROWS} per request")
    if all(isinstance(row, dict) for row in rows):
        return _dict_rows_to_array(rows, schema, where)
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise PayloadError(f"{where}[{index}] must be a list of {schema.width} numbers or an object of features")
        if len(row) != schema.width:
            raise PayloadError(f"{where}[{index}] has {len(row)} values; the model expects {schema.width}")
        for column, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PayloadError(
                    f"{where}[{index}][{column}] ({schema.names[column]}) must be a number, got {value!r:.40}"
                )
    return np.asarray(rows, dtype=np.float64)


def _dict_rows_to_array(rows: list[dict], schema: FeatureSchema, where: str) -> np.ndarray:
    expected = set(schema.names)
    out = np.empty((len(rows), schema.width), dtype=np.float64)
    for index, row in enumerate(rows):
        missing = [name for name in schema.names if name not in row]
        if missing:
            raise PayloadError(f"{where}[{index}] lacks feature(s) {', '.join(missing[:5])}")
        extra = sorted(set(row) - expected)
        if extra:
            raise PayloadError(f"{where}[{index}] has unknown feature(s) {', '.join(extra[:5])}")
        for column, name in enumerate(schema.names):
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PayloadError(f"{where}[{index}].{name} must be a number, got {value!r:.40}")
            out[index, column] = value
    return out


def parse_v1(body: Any, schema: FeatureSchema) -> np.ndarray:
    """`{"instances": [[...], ...]}` (or `"inputs"`) to a (rows, features) array."""
    if not isinstance(body, dict):
        raise PayloadError('the body must be a JSON object like {"instances": [[...], ...]}')
    for key in ("instances", "inputs"):
        if key in body:
            return _rows_to_array(body[key], schema, key)
    raise PayloadError('missing "instances": send {"instances": [[...], ...]}')


@dataclass(frozen=True)
class V2Input:
    name: str
    shape: Sequence[int]
    datatype: str
    data: Any


def parse_v2(inputs: Sequence[V2Input], schema: FeatureSchema) -> np.ndarray:
    """One input of shape [rows, features], or one input per feature of shape [rows]."""
    if not inputs:
        raise PayloadError('"inputs" is empty: send one tensor of shape [rows, features]')
    if len(inputs) == 1 and inputs[0].name not in schema.names:
        tensor = _v2_tensor(inputs[0])
        if tensor.ndim == 1:
            tensor = tensor.reshape(1, -1)
        if tensor.ndim != 2 or tensor.shape[1] != schema.width:
            raise PayloadError(
                f"input '{inputs[0].name}' has shape {list(tensor.shape)}; expected [rows, {schema.width}]"
            )
        return _check_rows(tensor.astype(np.float64, copy=False))
    by_name = {item.name: item for item in inputs}
    missing = [name for name in schema.names if name not in by_name]
    if missing:
        raise PayloadError(f"missing input(s) {', '.join(missing[:5])}; send one per feature or one [rows, features]")
    extra = sorted(set(by_name) - set(schema.names))
    if extra:
        raise PayloadError(f"unknown input(s) {', '.join(extra[:5])}")
    columns = [_v2_tensor(by_name[name]).reshape(-1) for name in schema.names]
    lengths = {len(column) for column in columns}
    if len(lengths) != 1:
        raise PayloadError(f"per-feature inputs have different lengths {sorted(lengths)}")
    return _check_rows(np.stack(columns, axis=1).astype(np.float64, copy=False))


def _check_rows(array: np.ndarray) -> np.ndarray:
    if array.shape[0] == 0:
        raise PayloadError("no rows: send at least one")
    if array.shape[0] > MAX_ROWS:
        raise PayloadError(f"{array.shape[0]} rows; at most {MAX_ROWS} per request")
    return array


def _v2_tensor(item: V2Input) -> np.ndarray:
    dtype = V2_NUMERIC_DATATYPES.get(str(item.datatype).upper())
    if dtype is None:
        raise PayloadError(
            f"input '{item.name}' has datatype {item.datatype!r}; use one of FP64, FP32, INT64, INT32, BOOL"
        )
    shape = list(item.shape or [])
    if not shape or any(not isinstance(dim, int) or isinstance(dim, bool) or dim < 0 for dim in shape):
        raise PayloadError(f"input '{item.name}' has an invalid shape {shape!r}")
    data = item.data
    if not isinstance(data, list):
        raise PayloadError(f"input '{item.name}': 'data' must be a list of numbers")
    flat = _flatten(data, item.name)
    if len(flat) != int(np.prod(shape)):
        raise PayloadError(f"input '{item.name}' has {len(flat)} values but shape {shape} needs {int(np.prod(shape))}")
    if len(flat) > MAX_ROWS * 1000:
        raise PayloadError(f"input '{item.name}' is too large ({len(flat)} values)")
    want_bool = dtype is np.bool_
    for position, value in enumerate(flat):
        ok = isinstance(value, bool) if want_bool else isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise PayloadError(f"input '{item.name}' value {position} is {value!r:.40}, not a {item.datatype} number")
    try:
        return np.asarray(flat, dtype=dtype).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise PayloadError(f"input '{item.name}': {exc}") from None


def _flatten(data: list, name: str) -> list:
    if all(not isinstance(value, list) for value in data):
        return data
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


# --------------------------------------------------------------------------- builders (load tests)


# Plain Python on purpose: the load generator calls these per request.
def v1_body(rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    return {"instances": [[float(value) for value in row] for row in rows]}


def v2_body(rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    data = [float(value) for row in rows for value in row]
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0]) if len(rows) else 0], "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": data}]}


def v2_datatype(array: np.ndarray) -> str:
    kind = np.asarray(array).dtype
    if kind == np.bool_:
        return "BOOL"
    if np.issubdtype(kind, np.integer):
        return "INT64"
    return "FP64"
