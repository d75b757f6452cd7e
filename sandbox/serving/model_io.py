"""What a served model takes and gives, read from its MLflow signature.

`ModelIO` turns decoded request bodies (KServe V1 JSON, V2 tensors from JSON,
the binary extension or gRPC) into exactly the input the signature declares,
so the model sees what `mlflow.pyfunc.load_model(uri).predict(...)` would see
in-process, and turns whatever `predict` returns into V1 predictions or named
V2 outputs. Anything the model cannot take is a `PayloadError` naming the
request field, row and column; the server answers it with a 400.

Three kinds of model input:
- columns (a ColSpec signature): a pandas DataFrame with one column per spec,
  each of its declared type (double, float, long, integer, boolean, string,
  binary, datetime); optional columns may be left out of a request;
- tensors (a TensorSpec signature): a numpy array of the declared dtype and
  shape, or a dict of them for named tensors;
- unknown (no signature): records become a DataFrame, anything else a numpy
  array; only JSON well-formedness and the NaN policy are checked.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sandbox.serving.payloads import MAX_ROWS, PayloadError

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
_NUMERIC_V2 = {name for name in V2_DTYPES if name not in ("BOOL", "BYTES")}
_TEXT_TYPES = ("string", "binary", "datetime")


def v2_datatype(dtype: Any) -> str:
    """The Open Inference Protocol datatype of a numpy dtype."""
    kind = np.dtype(dtype)
    if kind == np.bool_:
        return "BOOL"
    for name, candidate in V2_DTYPES.items():
        if candidate is not object and kind == np.dtype(candidate):
            return name
    return "BYTES"


def _safe(text: Any) -> str:
    """Text that can be encoded whatever the client sent (lone surrogates escaped)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _num(value: Any) -> str:
    """A number as a person writes it (nan, inf, 3.5e+38), not numpy's repr."""
    try:
        return repr(float(value))
    except (TypeError, ValueError, OverflowError):
        return _show(value)


def _show(value: Any) -> str:
    return _safe(repr(value))[:40]


# --------------------------------------------------------------------------- specs


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


@dataclass
class ModelInput:
    """One request's input, converted: what `predict` takes, and how many rows it has."""

    value: Any  # pandas DataFrame | np.ndarray | dict[str, np.ndarray]
    rows: int
    columns: dict[str, np.ndarray] | None = None  # columns models, before the DataFrame is built


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
            io.outputs = _outputs_metadata(signature.outputs)
        return io

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
            return self._from_named({name: (value, None, None) for name, value in data.items()}, key)
        if not isinstance(data, list):
            raise PayloadError(f"'{key}' must be a list of rows, got {type(data).__name__}")
        _check_row_count(len(data), key)
        if self.kind == "columns":
            return self._columns_from_rows(data, key)
        if self.kind == "tensors":
            if all(isinstance(row, dict) for row in data) and len(self.inputs) > 1:
                names = [spec.name for spec in self.inputs]
                return self._from_named(
                    {name: ([row.get(name) for row in data], None, None) for name in names}, key, rows=data
                )
            spec = self._single_tensor(key)
            return ModelInput(self._tensor(data, spec, key, None), len(data))
        # Unknown signature: records are a table, anything else an array.
        if all(isinstance(row, dict) for row in data):
            return self._records_frame(data, key)
        return ModelInput(self._loose_array(data, key), len(data))

    # ---------------------------------------------------------------- V2

    def from_v2(self, tensors: Sequence[tuple[str, Any, str, Any]]) -> ModelInput:
        """V2 inputs as (name, shape, datatype, data): data a (nested) list or a numpy array."""
        if not tensors:
            raise PayloadError('"inputs" is empty: send at least one input tensor')
        checked: dict[str, tuple[Any, list[int], str]] = {}
        for name, shape, datatype, data in tensors:
            if not isinstance(name, str) or not name:
                raise PayloadError('every input needs a "name" (a string)')
            datatype = datatype.upper() if isinstance(datatype, str) else datatype
            if not isinstance(datatype, str) or datatype not in V2_DTYPES:
                raise PayloadError(
                    f"input '{_safe(name)}' has datatype {_show(datatype)}; use one of {', '.join(V2_DTYPES)}"
                )
            if (
                not isinstance(shape, list | tuple)
                or not shape
                or any(not isinstance(dim, int) or isinstance(dim, bool) or dim < 0 for dim in shape)
            ):
                raise PayloadError(f"input '{_safe(name)}' has an invalid shape {_show(shape)}; e.g. [1, 8]")
            if name in checked:
                raise PayloadError(f"input '{_safe(name)}' is given twice")
            checked[name] = (data, list(shape), datatype)
        names = set(checked)
        if self.kind == "columns":
            columns = {spec.name for spec in self.inputs}
            if len(checked) == 1 and not names & columns:
                # One [rows, columns] tensor, in the signature's column order.
                ((name, (data, shape, datatype)),) = checked.items()
                flat = _flat_values(data, shape, name, datatype)
                if isinstance(flat, np.ndarray):  # binary extension or gRPC: checked value by value below
                    flat = flat.tolist()
                if len(shape) != 2 or shape[1] != len(self.inputs):
                    raise PayloadError(
                        f"input '{_safe(name)}' has shape {shape}; expected [rows, {len(self.inputs)}] "
                        f"or one input per column ({', '.join(sorted(columns))[:200]})"
                    )
                rows = [list(flat[i : i + shape[1]]) for i in range(0, len(flat), shape[1])]
                return self._columns_from_rows(rows, f"inputs[{_safe(name)}]", datatype=datatype)
        return self._from_named(checked, "inputs", v2=True)

    # ---------------------------------------------------------------- conversion

    def _single_tensor(self, where: str) -> InputSpec:
        if len(self.inputs) != 1:
            names = ", ".join(spec.name or "?" for spec in self.inputs)
            raise PayloadError(f"the model takes {len(self.inputs)} named tensors ({names}); send each by name")
        return self.inputs[0]

    def _from_named(
        self, named: dict[str, tuple[Any, list[int] | None, str | None]], where: str, *, v2: bool = False, rows=None
    ) -> ModelInput:
        if self.kind == "unknown":
            arrays = {
                name: self._loose_array(
                    _shaped(data, shape, name, datatype) if v2 else data, f"{where}[{_safe(name)}]", datatype
                )
                for name, (data, shape, datatype) in named.items()
            }
            if len(arrays) == 1:
                (array,) = arrays.values()
                return ModelInput(array, _rows_of(array))
            lengths = {_rows_of(a) for a in arrays.values()}
            if len(lengths) != 1:
                raise PayloadError(f"inputs have different numbers of rows {sorted(lengths)}")
            if all(a.ndim == 1 for a in arrays.values()):
                import pandas as pd

                return ModelInput(pd.DataFrame(arrays), lengths.pop())
            return ModelInput(arrays, lengths.pop())
        if self.kind == "tensors" and len(self.inputs) == 1 and len(named) == 1:
            ((name, (data, shape, datatype)),) = named.items()
            spec = self.inputs[0]
            if spec.name is None or name == spec.name or v2:
                array = self._one_tensor(data, shape, datatype, spec, f"{where}[{_safe(name)}]")
                return ModelInput(array, _rows_of(array))
        expected = {spec.name: spec for spec in self.inputs}
        unknown = sorted(set(named) - set(expected))
        if unknown:
            raise PayloadError(
                f"unknown input(s) {_safe(', '.join(unknown[:5]))}; the model takes "
                f"{_safe(', '.join(str(n) for n in expected)[:300])}"
            )
        missing = [spec.name for spec in self.inputs if spec.name not in named and not spec.optional]
        if missing:
            raise PayloadError(f"missing input(s) {', '.join(missing[:5])}")
        if self.kind == "tensors":
            arrays = {
                spec.name: self._one_tensor(*_unpack(named[spec.name]), spec, f"{where}[{spec.name}]")
                for spec in self.inputs
            }
            lengths = {_rows_of(a) for a in arrays.values()}
            if len(lengths) != 1:
                raise PayloadError(f"inputs have different numbers of rows {sorted(lengths)}")
            return ModelInput(arrays, lengths.pop())
        columns: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.name not in named:
                continue
            data, shape, datatype = named[spec.name]
            where_column = f"{where}[{spec.name}]"
            if shape is not None:
                if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                    raise PayloadError(f"input '{spec.name}' has shape {shape}; a column is [rows] or [rows, 1]")
                _check_datatype_for_column(datatype, spec, where_column)
                values = _flat_values(data, shape, spec.name, datatype)
            else:
                if not isinstance(data, list):
                    raise PayloadError(f"'{where_column}' must be a list with one value per row")
                values = data
            columns[spec.name] = self._column(values, spec, where_column, row_offset_label=True)
        return self._frame(columns)

    def _columns_from_rows(self, rows: list, where: str, *, datatype: str | None = None) -> ModelInput:
        _check_row_count(len(rows), where)
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
                _check_datatype_for_column(datatype, spec, where)
        # Fast path: every column a double and every value a plain number (the common tabular model).
        if all(spec.type == "double" for spec in specs):
            try:
                matrix = np.array(rows, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                matrix = None
            if matrix is not None and all(type(v) in (int, float) for row in rows for v in row):
                self._check_floats(matrix, specs, where)
                return self._frame({spec.name: matrix[:, i] for i, spec in enumerate(specs)})
        columns = {
            spec.name: self._column([row[i] for row in rows], spec, where, column_index=i)
            for i, spec in enumerate(specs)
        }
        return self._frame(columns)

    def _columns_from_records(self, rows: list[dict], where: str) -> ModelInput:
        names = {spec.name for spec in self.inputs}
        for index, row in enumerate(rows):
            extra = sorted(set(row) - names)
            if extra:
                raise PayloadError(f"{where}[{index}] has unknown column(s) {_safe(', '.join(extra[:5]))}")
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
            columns[spec.name] = self._column([row[spec.name] for row in rows], spec, where, column_name=spec.name)
        return self._frame(columns)

    def _frame(self, columns: dict[str, np.ndarray]) -> ModelInput:
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise PayloadError(f"columns have different numbers of rows {sorted(lengths)}")
        rows = lengths.pop() if lengths else 0
        if rows == 0:
            raise PayloadError("no rows: send at least one")
        _check_row_count(rows, "inputs")
        return ModelInput(None, rows, columns)

    def _column(
        self,
        values: list,
        spec: InputSpec,
        where: str,
        *,
        column_index: int | None = None,
        column_name: str | None = None,
        row_offset_label: bool = False,
    ) -> np.ndarray:
        """Python or numpy values of one column, converted to the column's declared type."""

        def at(row: int) -> str:
            if row_offset_label:
                return f"{where}[{row}]"
            if column_index is not None:
                return f"{where}[{row}][{column_index}] ({spec.name})"
            return f"{where}[{row}].{column_name}"

        if isinstance(values, np.ndarray):
            return self._numpy_column(values, spec, at)
        kind = spec.type
        if kind in ("double", "float", "long", "integer"):
            integral = kind in ("long", "integer")
            for row, value in enumerate(values):
                if type(value) is int:
                    continue
                if type(value) is float and not integral:
                    continue
                if type(value) is float and integral and value.is_integer():
                    continue
                want = "an integer" if integral else "a number"
                raise PayloadError(f"{at(row)} must be {want}, got {_show(value)}")
            try:
                array = np.array(values, dtype=np.float64 if not integral else object)
            except OverflowError:
                raise PayloadError(f"{where}: a value is too large for a number") from None
            if integral:
                return self._integers(array, spec, at)
            self._check_float_column(array, spec, at)
            return array.astype(spec.dtype)
        if kind == "boolean":
            for row, value in enumerate(values):
                if type(value) is not bool:
                    raise PayloadError(f"{at(row)} must be true or false, got {_show(value)}")
            return np.array(values, dtype=np.bool_)
        if kind in _TEXT_TYPES:
            out = np.empty(len(values), dtype=object)
            for row, value in enumerate(values):
                out[row] = _text_value(value, kind, at(row))
            if kind == "datetime":
                return out.astype("datetime64[ns]")
            return out
        # Array / Object / Map / Any columns: JSON values as they came.
        out = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):
            _check_json_value(value, at(row), self.allow_nan)
            out[row] = value
        return out

    def _numpy_column(self, values: np.ndarray, spec: InputSpec, at) -> np.ndarray:
        """A column from the binary extension or gRPC: already typed."""
        kind = spec.type
        values = values.reshape(-1)
        if kind in ("double", "float"):
            if values.dtype.kind not in "iuf":
                raise PayloadError(f"{at(0)}: column {spec.name} takes numbers, got {v2_datatype(values.dtype)}")
            array = values.astype(np.float64)
            self._check_float_column(array, spec, at)
            return array.astype(spec.dtype)
        if kind in ("long", "integer"):
            if values.dtype.kind == "f":
                bad = ~np.isfinite(values) | (values != np.round(values))
                if bad.any():
                    row = int(np.argmax(bad))
                    raise PayloadError(f"{at(row)} must be an integer, got {_num(values[row])}")
            elif values.dtype.kind not in "iu":
                raise PayloadError(f"{at(0)}: column {spec.name} takes integers, got {v2_datatype(values.dtype)}")
            return self._integers(values.astype(object) if values.dtype.kind == "u" else values, spec, at)
        if kind == "boolean":
            if values.dtype != np.bool_:
                raise PayloadError(f"{at(0)}: column {spec.name} takes BOOL, got {v2_datatype(values.dtype)}")
            return values
        return self._column(values.tolist(), spec, at(0).rsplit("[", 1)[0], row_offset_label=True)

    def _integers(self, array: np.ndarray, spec: InputSpec, at) -> np.ndarray:
        info = np.iinfo(spec.dtype)
        for row, value in enumerate(array.tolist()):
            if not info.min <= value <= info.max:
                raise PayloadError(f"{at(row)} is {_show(value)}, beyond the {spec.type} column's range")
        return np.asarray(array.tolist(), dtype=spec.dtype)

    def _check_float_column(self, array: np.ndarray, spec: InputSpec, at) -> None:
        finite = np.isfinite(array)
        if not self.allow_nan and not finite.all():
            row = int(np.argmin(finite))
            raise PayloadError(f"{at(row)} is {_num(array[row])}: {_NAN_FIX}")
        limit = FLOAT32_MAX if spec.type == "float" else self.float_limit
        if limit is not None:
            beyond = finite & (np.abs(array) > limit)
            if beyond.any():
                row = int(np.argmax(beyond))
                raise PayloadError(f"{at(row)} is {_num(array[row])}, {_FLOAT32_LIMIT}")

    def _check_floats(self, matrix: np.ndarray, specs: Sequence[InputSpec], where: str) -> None:
        finite = np.isfinite(matrix)
        bad = ~finite if not self.allow_nan else np.zeros_like(finite)
        if self.float_limit is not None:
            bad = bad | (finite & (np.abs(matrix) > self.float_limit))
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            value = matrix[row, column]
            if not math.isfinite(value):
                raise PayloadError(f"{where}[{row}][{column}] ({specs[column].name}) is {_num(value)}: {_NAN_FIX}")
            raise PayloadError(f"{where}[{row}][{column}] ({specs[column].name}) is {_num(value)}, {_FLOAT32_LIMIT}")

    def _one_tensor(self, data, shape, datatype, spec: InputSpec, where: str) -> np.ndarray:
        if datatype is not None and datatype == "BYTES" and spec.dtype.kind in "biuf":
            raise PayloadError(f"'{where}' is BYTES; the model takes {spec.datatype}")
        if shape is not None:
            data = _shaped(data, shape, where, datatype)
        return self._tensor(data, spec, where, datatype)

    def _tensor(self, data: Any, spec: InputSpec, where: str, datatype: str | None) -> np.ndarray:
        dtype = spec.dtype
        array = data if isinstance(data, np.ndarray) else _json_array(data, where, dtype)
        expected = spec.shape
        if array.ndim != len(expected) or any(
            want != -1 and got != want for got, want in zip(array.shape, expected, strict=False)
        ):
            raise PayloadError(f"'{where}' has shape {list(array.shape)}; the model takes {list(expected)}")
        _check_row_count(_rows_of(array), where)
        return self._cast(array, dtype, where)

    def _cast(self, array: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
        """Cast to the model's dtype, refusing what the dtype cannot hold."""
        if dtype.kind in "fc":
            if array.dtype.kind not in "iuf":
                raise PayloadError(f"'{where}' must hold numbers, got {v2_datatype(array.dtype)} values")
            values = array.astype(np.float64)
            finite = np.isfinite(values)
            if not self.allow_nan and not finite.all():
                index = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise PayloadError(f"'{where}' value at {list(index)} is {_num(values[index])}: {_NAN_FIX}")
            limit = float(np.finfo(dtype).max)
            if dtype == np.float64 and self.float_limit is not None:
                limit = self.float_limit
            beyond = finite & (np.abs(values) > limit)
            if beyond.any():
                index = tuple(int(i) for i in np.argwhere(beyond)[0])
                raise PayloadError(
                    f"'{where}' value at {list(index)} is {_num(values[index])}, beyond what {np.dtype(dtype).name} "
                    f"holds (±{limit:.4g})"
                )
            return array.astype(dtype)
        if dtype.kind in "iu":
            if array.dtype.kind == "f":
                bad = ~np.isfinite(array) | (array != np.round(array))
                if bad.any():
                    index = tuple(int(i) for i in np.argwhere(bad)[0])
                    raise PayloadError(f"'{where}' value at {list(index)} is {_num(array[index])}, not an integer")
            elif array.dtype.kind == "O":  # Python ints from JSON, kept exact until range-checked
                if any(type(v) is not int for v in array.reshape(-1).tolist()):
                    raise PayloadError(f"'{where}' must hold integers")
            elif array.dtype.kind not in "iub":
                raise PayloadError(f"'{where}' must hold integers, got {v2_datatype(array.dtype)} values")
            info = np.iinfo(dtype)
            if array.size:
                low, high = array.min(), array.max()
                if int(low) < info.min or int(high) > info.max:
                    raise PayloadError(f"'{where}' has values beyond what {np.dtype(dtype).name} holds")
            return array.astype(dtype)
        if dtype.kind == "b":
            if array.dtype != np.bool_:
                raise PayloadError(f"'{where}' must hold true/false values, got {v2_datatype(array.dtype)}")
            return array
        # String / bytes / object tensors.
        flat = array.reshape(-1)
        out = np.empty(flat.shape, dtype=object)
        want = "binary" if dtype.kind == "S" else "string"
        for index, value in enumerate(flat.tolist()):
            out[index] = _text_value(value, want, f"'{where}' value {index}")
        return out.reshape(array.shape)

    def _loose_array(self, data: Any, where: str, datatype: str | None = None) -> np.ndarray:
        """No signature: a numeric array when every value is a number, text otherwise."""
        if isinstance(data, np.ndarray):
            array = data
        else:
            array = _json_array(data, where, None)
        if array.dtype.kind == "f":
            finite = np.isfinite(array)
            if not self.allow_nan and not finite.all():
                index = [int(i) for i in np.argwhere(~finite)[0]]
                raise PayloadError(f"'{where}' value at {index} is {_num(array[tuple(index)])}: {_NAN_FIX}")
        elif array.dtype.kind == "O":
            for index, value in enumerate(array.reshape(-1).tolist()):
                _check_json_value(value, f"'{where}' value {index}", self.allow_nan)
        if array.ndim == 0:
            raise PayloadError(f"'{where}' must be a list of rows")
        _check_row_count(len(array), where)
        return array

    def _records_frame(self, rows: list[dict], where: str) -> ModelInput:
        import pandas as pd

        for index, row in enumerate(rows):
            for key, value in row.items():
                _check_json_value(key, f"{where}[{index}] key", self.allow_nan)
                _check_json_value(value, f"{where}[{index}].{_safe(key)}", self.allow_nan)
        return ModelInput(pd.DataFrame.from_records(rows), len(rows))

    # ---------------------------------------------------------------- batching

    def model_input(self, item: ModelInput) -> Any:
        """The value `predict` takes (columns become a DataFrame here, once per batch)."""
        if item.columns is None:
            return item.value
        import pandas as pd

        return pd.DataFrame(item.columns, copy=False)

    def combine(self, items: Sequence[ModelInput]) -> ModelInput:
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


_FLOAT32_LIMIT = f"beyond what the model's input can hold (float32, ±{FLOAT32_MAX:.4g})"
_NAN_FIX = "NaN and infinite values are refused; send finite numbers (or deploy with --allow-nan)"


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Output:
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


def _outputs_metadata(schema) -> list[dict[str, Any]]:
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
    return [{"name": o.name, "datatype": o.datatype, "shape": [-1, *o.array.shape[1:]]} for o in outputs]


# --------------------------------------------------------------------------- helpers


def _check_row_count(rows: int, where: str) -> None:
    if rows == 0:
        raise PayloadError(f"'{where}' is empty: send at least one row")
    if rows > MAX_ROWS:
        raise PayloadError(f"'{where}' has {rows} rows; at most {MAX_ROWS} per request")


def _rows_of(array: Any) -> int:
    return len(array) if getattr(array, "ndim", 1) else 1


def _unpack(entry):
    data, shape, datatype = entry
    return data, shape, datatype


def _check_datatype_for_column(datatype: str | None, spec: InputSpec, where: str) -> None:
    if datatype is None or spec.type == "json":
        return
    if spec.type in ("double", "float", "long", "integer"):
        ok = datatype in _NUMERIC_V2
    elif spec.type == "boolean":
        ok = datatype == "BOOL"
    else:
        ok = datatype == "BYTES"
    if not ok:
        raise PayloadError(f"'{where}' is {datatype}; column {spec.name} ({spec.type}) takes {spec.datatype}")


def _text_value(value: Any, kind: str, where: str) -> Any:
    if kind == "binary":
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            try:
                return base64.b64decode(value.encode("ascii"), validate=True)
            except (ValueError, UnicodeEncodeError):
                raise PayloadError(f"{where} must be base64-encoded bytes") from None
        raise PayloadError(f"{where} must be base64-encoded bytes, got {_show(value)}")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(f"{where} is not valid UTF-8 text") from None
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string, got {_show(value)}")
    _check_text(value, where)
    if kind == "datetime":
        try:
            return np.datetime64(value, "ns")
        except ValueError:
            raise PayloadError(f"{where} is {_show(value)}, not an ISO 8601 date-time") from None
    return value


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{where} holds text that is not valid Unicode (a lone surrogate); send UTF-8") from None


def _check_json_value(value: Any, where: str, allow_nan: bool, depth: int = 0) -> None:
    if depth > 32:
        raise PayloadError(f"{where} is nested too deeply")
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, float):
        if not allow_nan and not math.isfinite(value):
            raise PayloadError(f"{where} is {_num(value)}: {_NAN_FIX}")
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, where, allow_nan, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json_value(key, where, allow_nan, depth + 1)
            _check_json_value(item, where, allow_nan, depth + 1)


def _json_array(data: Any, where: str, dtype: np.dtype | None) -> np.ndarray:
    """A JSON (nested) list as an array, refusing ragged lists and values of the wrong kind."""
    if not isinstance(data, list):
        raise PayloadError(f"'{where}' must be a list, got {type(data).__name__}")
    leaves, shape = _leaves(data, where)
    if dtype is not None and np.dtype(dtype).kind in "biufc":
        want_bool = np.dtype(dtype).kind == "b"
        for index, value in enumerate(leaves):
            if want_bool:
                if type(value) is not bool:
                    raise PayloadError(f"'{where}' value {index} is {_show(value)}, not true/false")
            elif type(value) not in (int, float):
                raise PayloadError(f"'{where}' value {index} is {_show(value)}, not a number")
        try:
            if want_bool:
                return np.array(leaves, dtype=np.bool_).reshape(shape)
            if all(type(v) is int for v in leaves) and np.dtype(dtype).kind in "iu":
                return np.array(leaves, dtype=object).reshape(shape)
            return np.array(leaves, dtype=np.float64).reshape(shape)
        except OverflowError:
            raise PayloadError(f"'{where}' holds a number too large to represent") from None
    kinds = {type(v) for v in leaves}
    if kinds <= {int, float} and leaves:
        try:
            return np.array(leaves, dtype=np.float64 if float in kinds else np.int64).reshape(shape)
        except OverflowError:
            return np.array(leaves, dtype=object).reshape(shape)
    if kinds <= {bool} and leaves:
        return np.array(leaves, dtype=np.bool_).reshape(shape)
    out = np.empty(len(leaves), dtype=object)
    for index, value in enumerate(leaves):
        out[index] = value
    return out.reshape(shape)


def _leaves(data: list, where: str, max_depth: int = 32) -> tuple[list, tuple[int, ...]]:
    """Flatten a rectangular nested list; its shape."""
    shape: list[int] = []
    level: list = data
    while isinstance(level, list):
        shape.append(len(level))
        if len(shape) > max_depth:
            raise PayloadError(f"'{where}' is nested more than {max_depth} levels deep")
        if not level:
            break
        level = level[0]
    leaves: list = []
    stack: list[tuple[list, int]] = [(data, 0)]
    while stack:
        items, depth = stack.pop()
        if len(items) != shape[depth]:
            raise PayloadError(f"'{where}' is ragged: rows of different lengths at depth {depth}")
        if depth == len(shape) - 1:
            for value in items:
                if isinstance(value, list | dict):
                    raise PayloadError(f"'{where}' is ragged: a list where a value was expected")
            leaves.extend(items)
        else:
            for value in reversed(items):
                if not isinstance(value, list):
                    raise PayloadError(f"'{where}' is ragged: a value where a list was expected")
                stack.append((value, depth + 1))
    return leaves, tuple(shape)


def _flat_values(data: Any, shape: list[int], name: str, datatype: str) -> list | np.ndarray:
    """A V2 input's data, flat, checked against its declared shape."""
    needed = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if needed > MAX_ROWS * 1000:
        raise PayloadError(f"input '{_safe(name)}' declares {needed} values; too many for one request")
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
    else:
        if not isinstance(data, list):
            raise PayloadError(f"input '{_safe(name)}': 'data' must be a list of values")
        flat, _ = _leaves(data, f"inputs[{_safe(name)}]") if any(isinstance(v, list) for v in data) else (data, ())
    if len(flat) != needed:
        raise PayloadError(f"input '{_safe(name)}' has {len(flat)} values but shape {shape} needs {needed}")
    if not isinstance(flat, np.ndarray):
        _check_v2_values(flat, name, datatype)
    return flat


def _check_v2_values(flat: list, name: str, datatype: str) -> None:
    if datatype == "BOOL":
        bad = next((v for v in flat if type(v) is not bool), _NONE)
        want = "true/false"
    elif datatype == "BYTES":
        bad = next((v for v in flat if not isinstance(v, str)), _NONE)
        want = "strings"
    else:
        bad = next((v for v in flat if type(v) not in (int, float)), _NONE)
        want = "numbers"
        if bad is _NONE and datatype.startswith(("INT", "UINT")):
            bad = next((v for v in flat if type(v) is float and not v.is_integer()), _NONE)
            want = "integers"
            if bad is _NONE and flat:
                info = np.iinfo(V2_DTYPES[datatype])
                if min(flat) < info.min or max(flat) > info.max:
                    raise PayloadError(f"input '{_safe(name)}' has values beyond what {datatype} holds")
        elif bad is _NONE and datatype in ("FP32", "FP16") and flat:
            limit = float(np.finfo(V2_DTYPES[datatype]).max)
            if any(abs(v) > limit for v in flat if math.isfinite(v)):
                raise PayloadError(f"input '{_safe(name)}' has values beyond what {datatype} holds (±{limit:.4g})")
    if bad is not _NONE:
        raise PayloadError(f"input '{_safe(name)}' is {datatype} but holds {_show(bad)}; send {want}")


_NONE = object()


def _shaped(data: Any, shape: list[int], name: str, datatype: str | None) -> Any:
    """A V2 input's data as an array of its declared shape and datatype."""
    flat = _flat_values(data, shape, name, datatype or "BYTES")
    if isinstance(flat, np.ndarray):
        return flat.reshape(shape)
    if datatype == "BYTES":
        out = np.empty(len(flat), dtype=object)
        for index, value in enumerate(flat):
            _check_text(value, f"input '{_safe(name)}' value {index}")
            out[index] = value
        return out.reshape(shape)
    if datatype == "BOOL":
        return np.array(flat, dtype=np.bool_).reshape(shape)
    try:
        if datatype.startswith(("INT", "UINT")):
            values = [int(v) for v in flat]
            info = np.iinfo(V2_DTYPES[datatype])
            if values and (min(values) < info.min or max(values) > info.max):
                raise PayloadError(f"input '{_safe(name)}' has values beyond what {datatype} holds")
            return np.array(values, dtype=V2_DTYPES[datatype]).reshape(shape)
        return np.array(flat, dtype=np.float64).reshape(shape)
    except OverflowError:
        raise PayloadError(f"input '{_safe(name)}' holds a number too large to represent") from None
