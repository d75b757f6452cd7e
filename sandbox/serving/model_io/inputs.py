"""Decoded request bodies (KServe V1 JSON, V2 tensors) as exactly the input a model's signature declares, and
inputs of concurrent requests stacked into one for a micro-batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sandbox.serving.model_io.conversion import ValuePolicy
from sandbox.serving.model_io.outputs import signature_outputs_metadata
from sandbox.serving.model_io.schema import COLUMN_DTYPES, InputSpec, ModelInput, V2Tensor
from sandbox.serving.model_io.values import (
    check_datatype_for_column,
    check_row_count,
    checked_v2,
    flat_values,
    rows_of,
    safe,
    shaped,
)
from sandbox.wire import PayloadError


@dataclass
class ModelIO:
    kind: str  # "columns" | "tensors" | "unknown"
    inputs: list[InputSpec] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # V2 metadata, from the signature or a probe
    allow_nan: bool = False
    float_limit: float | None = None  # set when the model holds float64 inputs only within float32's range

    @classmethod
    def from_signature(cls, signature, *, allow_nan: bool = False) -> ModelIO:
        if signature is None or signature.inputs is None:
            io = cls("unknown", allow_nan=allow_nan)
        elif signature.inputs.is_tensor_spec():
            specs = [
                InputSpec(spec.name, np.dtype(spec.type).name, np.dtype(spec.type), tuple(spec.shape))
                for spec in signature.inputs.inputs
            ]
            io = cls("tensors", specs, allow_nan=allow_nan)
        else:
            specs = []
            for position, spec in enumerate(signature.inputs.inputs):
                type_name = getattr(spec.type, "name", None)
                if type_name not in COLUMN_DTYPES:  # Array, Object, Map, Any: passed on as JSON values
                    type_name = "json"
                specs.append(
                    InputSpec(
                        spec.name or f"c{position}",
                        type_name,
                        COLUMN_DTYPES.get(type_name, object),
                        optional=not getattr(spec, "required", True),
                    )
                )
            io = cls("columns", specs, allow_nan=allow_nan)
        if signature is not None and signature.outputs is not None:
            io.outputs = signature_outputs_metadata(signature.outputs)
        return io

    @property
    def checks(self) -> ValuePolicy:
        return ValuePolicy(self.allow_nan, self.float_limit)

    # ---------------------------------------------------------------- metadata

    def metadata_inputs(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in self.inputs]

    def describe(self) -> dict[str, Any]:
        """What the server checks, for V2 metadata's parameters."""
        if self.kind == "unknown":
            return {"signature": "none", "checked": "JSON well-formedness and the NaN policy only"}
        return {"signature": self.kind, "allow_nan": self.allow_nan}

    # ---------------------------------------------------------------- V1

    def from_v1(self, body: Any) -> ModelInput:
        """`{"instances": [...]}` or `{"inputs": ...}` (KServe V1, MLflow's TF-serving shape)."""
        if not isinstance(body, dict):
            raise PayloadError('the body must be a JSON object like {"instances": [[...], ...]}')
        key = "instances" if "instances" in body else "inputs" if "inputs" in body else None
        if key is None:
            raise PayloadError('missing "instances": send {"instances": [[...], ...]}')
        data = body[key]
        if isinstance(data, dict) and key == "inputs":
            # Named tensors or columns, each a list over rows.
            return self._from_named({name: V2Tensor(name, data=value) for name, value in data.items()}, key)
        if not isinstance(data, list):
            raise PayloadError(f"'{key}' must be a list of rows, got {type(data).__name__}")
        check_row_count(len(data), key)
        if self.kind == "columns":
            return self._columns_from_rows(data, key)
        if self.kind == "tensors":
            if all(isinstance(row, dict) for row in data) and len(self.inputs) > 1:
                names = [spec.name for spec in self.inputs]
                return self._from_named(
                    {name: V2Tensor(name, data=[row.get(name) for row in data]) for name in names}, key
                )
            spec = self._single_tensor(key)
            return ModelInput(self.checks.tensor(data, spec, key), len(data))
        # Unknown signature: records are a table, anything else an array.
        if all(isinstance(row, dict) for row in data):
            import pandas as pd

            self.checks.check_records(data, key)
            return ModelInput(pd.DataFrame.from_records(data), len(data))
        return ModelInput(self.checks.loose_array(data, key), len(data))

    # ---------------------------------------------------------------- V2

    def from_v2(self, tensors: Sequence[V2Tensor]) -> ModelInput:
        """V2 inputs as they came (JSON, the binary extension, gRPC)."""
        if not tensors:
            raise PayloadError('"inputs" is empty: send at least one input tensor')
        checked: dict[str, V2Tensor] = {}
        for tensor in tensors:
            tensor = checked_v2(tensor)
            if tensor.name in checked:
                raise PayloadError(f"input '{safe(tensor.name)}' is given twice")
            checked[tensor.name] = tensor
        if self.kind == "columns":
            columns = {spec.name for spec in self.inputs}
            if len(checked) == 1 and not set(checked) & columns:
                # One [rows, columns] tensor, in the signature's column order.
                (tensor,) = checked.values()
                name, shape = tensor.name, tensor.shape
                flat = flat_values(tensor.data, shape, name, tensor.datatype)
                if isinstance(flat, np.ndarray):  # binary extension or gRPC: checked value by value below
                    flat = flat.tolist()
                if len(shape) != 2 or shape[1] != len(self.inputs):
                    raise PayloadError(
                        f"input '{safe(name)}' has shape {shape}; expected [rows, {len(self.inputs)}] "
                        f"or one input per column ({', '.join(sorted(columns))[:200]})"
                    )
                rows = [list(flat[i : i + shape[1]]) for i in range(0, len(flat), shape[1])]
                return self._columns_from_rows(rows, f"inputs[{safe(name)}]", datatype=tensor.datatype)
        return self._from_named(checked, "inputs")

    # ---------------------------------------------------------------- conversion

    def _single_tensor(self, where: str) -> InputSpec:
        if len(self.inputs) != 1:
            names = ", ".join(spec.name or "?" for spec in self.inputs)
            raise PayloadError(f"the model takes {len(self.inputs)} named tensors ({names}); send each by name")
        return self.inputs[0]

    def _from_named(self, named: dict[str, V2Tensor], where: str) -> ModelInput:
        """Named inputs: V2's (checked: a datatype and a shape), or V1's `{"inputs": {NAME: [...]}}` (neither)."""
        checks = self.checks
        if self.kind == "unknown":
            arrays = {
                name: checks.loose_array(
                    tensor.data if tensor.shape is None else shaped(tensor.data, tensor.shape, name, tensor.datatype),
                    f"{where}[{safe(name)}]",
                )
                for name, tensor in named.items()
            }
            if len(arrays) == 1:
                (array,) = arrays.values()
                return ModelInput(array, rows_of(array))
            lengths = {rows_of(a) for a in arrays.values()}
            if len(lengths) != 1:
                raise PayloadError(f"inputs have different numbers of rows {sorted(lengths)}")
            if all(a.ndim == 1 for a in arrays.values()):
                import pandas as pd

                return ModelInput(pd.DataFrame(arrays), lengths.pop())
            return ModelInput(arrays, lengths.pop())
        if self.kind == "tensors" and len(self.inputs) == 1 and len(named) == 1:
            ((name, tensor),) = named.items()
            spec = self.inputs[0]
            if spec.name is None or name == spec.name or tensor.shape is not None:
                array = checks.one_tensor(tensor, spec, f"{where}[{safe(name)}]")
                return ModelInput(array, rows_of(array))
        expected = {spec.name: spec for spec in self.inputs}
        unknown = sorted(set(named) - set(expected))
        if unknown:
            raise PayloadError(
                f"unknown input(s) {safe(', '.join(unknown[:5]))}; the model takes "
                f"{safe(', '.join(str(n) for n in expected)[:300])}"
            )
        missing = [spec.name for spec in self.inputs if spec.name not in named and not spec.optional]
        if missing:
            raise PayloadError(f"missing input(s) {', '.join(missing[:5])}")
        if self.kind == "tensors":
            arrays = {
                spec.name: checks.one_tensor(named[spec.name], spec, f"{where}[{spec.name}]") for spec in self.inputs
            }
            lengths = {rows_of(a) for a in arrays.values()}
            if len(lengths) != 1:
                raise PayloadError(f"inputs have different numbers of rows {sorted(lengths)}")
            return ModelInput(arrays, lengths.pop())
        columns: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.name not in named:
                continue
            tensor = named[spec.name]
            shape = tensor.shape
            where_column = f"{where}[{spec.name}]"
            if shape is not None:
                if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                    raise PayloadError(f"input '{spec.name}' has shape {shape}; a column is [rows] or [rows, 1]")
                check_datatype_for_column(tensor.datatype, spec, where_column)
                values = flat_values(tensor.data, shape, spec.name, tensor.datatype)
            else:
                if not isinstance(tensor.data, list):
                    raise PayloadError(f"'{where_column}' must be a list with one value per row")
                values = tensor.data
            columns[spec.name] = checks.column(values, spec, where_column, row_offset_label=True)
        return _frame(columns)

    def _columns_from_rows(self, rows: list, where: str, *, datatype: str | None = None) -> ModelInput:
        check_row_count(len(rows), where)
        specs = self.inputs
        width = len(specs)
        if all(isinstance(row, dict) for row in rows):
            return self._columns_from_records(rows, where)
        for index, row in enumerate(rows):
            if not isinstance(row, list):
                raise PayloadError(f"{where}[{index}] must be a list of {width} values or an object of columns")
            if len(row) != width:
                raise PayloadError(f"{where}[{index}] has {len(row)} values; the model expects {width}")
        if datatype is not None:
            for spec in specs:
                check_datatype_for_column(datatype, spec, where)
        checks = self.checks
        # Fast path: every column a double and every value a plain number (the common tabular model).
        if all(spec.type == "double" for spec in specs):
            try:
                matrix = np.array(rows, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                matrix = None
            if matrix is not None and all(type(v) in (int, float) for row in rows for v in row):
                checks.check_floats(matrix, specs, where)
                return _frame({spec.name: matrix[:, i] for i, spec in enumerate(specs)})
        columns = {
            spec.name: checks.column([row[i] for row in rows], spec, where, column_index=i)
            for i, spec in enumerate(specs)
        }
        return _frame(columns)

    def _columns_from_records(self, rows: list[dict], where: str) -> ModelInput:
        names = {spec.name for spec in self.inputs}
        for index, row in enumerate(rows):
            extra = sorted(set(row) - names)
            if extra:
                raise PayloadError(f"{where}[{index}] has unknown column(s) {safe(', '.join(extra[:5]))}")
        checks = self.checks
        columns = {}
        for spec in self.inputs:
            present = [spec.name in row for row in rows]
            if not all(present):
                if spec.optional and not any(present):
                    continue
                index = present.index(False)
                if spec.optional:
                    raise PayloadError(
                        f"{where}[{index}] lacks optional column {spec.name}; send it in every row or in none"
                    )
                missing = [s.name for s in self.inputs if s.name not in rows[index] and not s.optional]
                raise PayloadError(f"{where}[{index}] lacks column(s) {', '.join(missing[:5])}")
            columns[spec.name] = checks.column([row[spec.name] for row in rows], spec, where, column_name=spec.name)
        return _frame(columns)

    # ---------------------------------------------------------------- batching

    def model_input(self, item: ModelInput) -> Any:
        """The value `predict` takes (columns become a DataFrame here, once per batch)."""
        if item.columns is None:
            return item.value
        import pandas as pd

        return pd.DataFrame(item.columns, copy=False)

    def combine(self, items: Sequence[ModelInput]) -> ModelInput | None:
        """Several requests' inputs as one (for a micro-batch); None when they cannot be stacked."""
        if len(items) == 1:
            return items[0]
        first = items[0]
        rows = sum(item.rows for item in items)
        if first.columns is not None:
            names = list(first.columns)
            if any(item.columns is None or list(item.columns) != names for item in items):
                return None
            return ModelInput(None, rows, {n: np.concatenate([i.columns[n] for i in items]) for n in names})
        if isinstance(first.value, np.ndarray):
            shapes = {item.value.shape[1:] for item in items if isinstance(item.value, np.ndarray)}
            if len(shapes) != 1 or not all(isinstance(item.value, np.ndarray) for item in items):
                return None
            return ModelInput(np.concatenate([item.value for item in items]), rows)
        if isinstance(first.value, dict):
            keys = list(first.value)
            if any(not isinstance(i.value, dict) or list(i.value) != keys for i in items):
                return None
            try:
                return ModelInput({k: np.concatenate([i.value[k] for i in items]) for k in keys}, rows)
            except ValueError:
                return None
        return None  # unknown-signature tables: predicted one by one

    def features(self, item: ModelInput) -> np.ndarray | None:
        """The input as a (rows, features) float matrix for the inference log; None when not numeric."""
        try:
            if item.columns is not None:
                arrays = list(item.columns.values())
                if all(a.dtype.kind in "biuf" for a in arrays):
                    return np.column_stack([a.astype(np.float64) for a in arrays])
                return None
            value = item.value
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                return value.reshape(len(value), -1).astype(np.float64)
        except (TypeError, ValueError):
            return None
        return None


def _frame(columns: dict[str, np.ndarray]) -> ModelInput:
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise PayloadError(f"columns have different numbers of rows {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    if rows == 0:
        raise PayloadError("no rows: send at least one")
    check_row_count(rows, "inputs")
    return ModelInput(None, rows, columns)
