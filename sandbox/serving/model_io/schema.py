"""The types a served model's inputs and outputs are described in: MLflow's column types, V2 datatypes and the
numpy dtypes behind both; one input of the signature (`InputSpec`); one V2 tensor as a client sent it
(`V2Tensor`); one request's converted input (`ModelInput`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)

# MLflow column types and the numpy dtypes pyfunc's schema enforcement expects.
COLUMN_DTYPES: dict[str, Any] = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "string": object,
    "binary": object,
    "datetime": "datetime64[ns]",
}
COLUMN_V2_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
V2_DTYPES: dict[str, Any] = {
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
    "BYTES": object,
}
NUMERIC_V2 = frozenset(name for name in V2_DTYPES if name not in ("BOOL", "BYTES"))
TEXT_TYPES = ("string", "binary", "datetime")


def v2_datatype(dtype: Any) -> str:
    """The Open Inference Protocol datatype of a numpy dtype."""
    kind = np.dtype(dtype)
    if kind == np.bool_:
        return "BOOL"
    for name, candidate in V2_DTYPES.items():
        if candidate is not object and kind == np.dtype(candidate):
            return name
    return "BYTES"


@dataclass(frozen=True)
class InputSpec:
    """One column (columns models) or one tensor (tensor models)."""

    name: str | None
    type: str  # an MLflow column type, or a numpy dtype name for tensors
    dtype: Any
    shape: tuple[int, ...] = (-1,)
    optional: bool = False

    @property
    def datatype(self) -> str:
        return COLUMN_V2_DATATYPES.get(self.type) or v2_datatype(self.dtype)

    def metadata(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name or "input-0", "datatype": self.datatype, "shape": list(self.shape)}
        parameters = {"mlflow_type": self.type}
        if self.optional:
            parameters["optional"] = True
        entry["parameters"] = parameters
        return entry


@dataclass(frozen=True)
class V2Tensor:
    """One named input as it came, before any check: each field may be of any type a client sent.

    From V2 (JSON, the binary extension, gRPC) every field is set; `data` is a (nested) JSON list, or a numpy
    array where raw bytes were decoded. A V1 body's named inputs (`{"inputs": {NAME: [...]}}`) have no datatype
    and no shape: `data` is a list over rows.
    """

    name: Any
    datatype: Any = None
    shape: Any = None
    data: Any = None

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> V2Tensor:
        """One entry of a V2 JSON body's "inputs"."""
        return cls(entry.get("name"), entry.get("datatype"), entry.get("shape"), entry.get("data"))


@dataclass
class ModelInput:
    """One request's input, converted: what `predict` takes, and how many rows it has."""

    value: Any  # pandas DataFrame | np.ndarray | dict[str, np.ndarray]
    rows: int
    columns: dict[str, np.ndarray] | None = None  # columns models, before the DataFrame is built
