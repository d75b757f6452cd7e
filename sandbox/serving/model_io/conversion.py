"""Values converted to what the signature declares for them (a column's type, a tensor's dtype and shape),
refusing what the declared type cannot hold: non-finite numbers unless the deployment allows them, numbers
beyond a dtype's range (or beyond float32's where the model was found to hold only that), fractions for
integers, text that is not Unicode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sandbox.serving.model_io.schema import FLOAT32_MAX, TEXT_TYPES, InputSpec, V2Tensor, v2_datatype
from sandbox.serving.model_io.values import (
    FLOAT32_LIMIT,
    NAN_FIX,
    check_json_value,
    check_row_count,
    json_array,
    num,
    rows_of,
    safe,
    shaped,
    show,
    text_value,
)
from sandbox.wire import PayloadError


@dataclass(frozen=True)
class ValuePolicy:
    """What a deployment accepts beyond its signature's types."""

    allow_nan: bool = False
    float_limit: float | None = None  # set when the model holds float64 inputs only within float32's range

    def column(
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
                raise PayloadError(f"{at(row)} must be {want}, got {show(value)}")
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
                    raise PayloadError(f"{at(row)} must be true or false, got {show(value)}")
            return np.array(values, dtype=np.bool_)
        if kind in TEXT_TYPES:
            out = np.empty(len(values), dtype=object)
            for row, value in enumerate(values):
                out[row] = text_value(value, kind, at(row))
            if kind == "datetime":
                return out.astype("datetime64[ns]")
            return out
        # Array / Object / Map / Any columns: JSON values as they came.
        out = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):
            check_json_value(value, at(row), self.allow_nan)
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
                    raise PayloadError(f"{at(row)} must be an integer, got {num(values[row])}")
            elif values.dtype.kind not in "iu":
                raise PayloadError(f"{at(0)}: column {spec.name} takes integers, got {v2_datatype(values.dtype)}")
            return self._integers(values.astype(object) if values.dtype.kind == "u" else values, spec, at)
        if kind == "boolean":
            if values.dtype != np.bool_:
                raise PayloadError(f"{at(0)}: column {spec.name} takes BOOL, got {v2_datatype(values.dtype)}")
            return values
        return self.column(values.tolist(), spec, at(0).rsplit("[", 1)[0], row_offset_label=True)

    def _integers(self, array: np.ndarray, spec: InputSpec, at) -> np.ndarray:
        info = np.iinfo(spec.dtype)
        for row, value in enumerate(array.tolist()):
            if not info.min <= value <= info.max:
                raise PayloadError(f"{at(row)} is {show(value)}, beyond the {spec.type} column's range")
        return np.asarray(array.tolist(), dtype=spec.dtype)

    def _check_float_column(self, array: np.ndarray, spec: InputSpec, at) -> None:
        finite = np.isfinite(array)
        if not self.allow_nan and not finite.all():
            row = int(np.argmin(finite))
            raise PayloadError(f"{at(row)} is {num(array[row])}: {NAN_FIX}")
        limit = FLOAT32_MAX if spec.type == "float" else self.float_limit
        if limit is not None:
            beyond = finite & (np.abs(array) > limit)
            if beyond.any():
                row = int(np.argmax(beyond))
                raise PayloadError(f"{at(row)} is {num(array[row])}, {FLOAT32_LIMIT}")

    def check_floats(self, matrix: np.ndarray, specs: Sequence[InputSpec], where: str) -> None:
        finite = np.isfinite(matrix)
        bad = ~finite if not self.allow_nan else np.zeros_like(finite)
        if self.float_limit is not None:
            bad = bad | (finite & (np.abs(matrix) > self.float_limit))
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            value = matrix[row, column]
            if not math.isfinite(value):
                raise PayloadError(f"{where}[{row}][{column}] ({specs[column].name}) is {num(value)}: {NAN_FIX}")
            raise PayloadError(f"{where}[{row}][{column}] ({specs[column].name}) is {num(value)}, {FLOAT32_LIMIT}")

    def one_tensor(self, tensor: V2Tensor, spec: InputSpec, where: str) -> np.ndarray:
        """A named input (checked V2, or V1's list over rows) as the tensor `spec` declares."""
        if tensor.datatype == "BYTES" and spec.dtype.kind in "biuf":
            raise PayloadError(f"'{where}' is BYTES; the model takes {spec.datatype}")
        data = tensor.data
        if tensor.shape is not None:
            data = shaped(data, tensor.shape, where, tensor.datatype)
        return self.tensor(data, spec, where)

    def tensor(self, data: Any, spec: InputSpec, where: str) -> np.ndarray:
        dtype = spec.dtype
        array = data if isinstance(data, np.ndarray) else json_array(data, where, dtype)
        expected = spec.shape
        if array.ndim != len(expected) or any(
            want != -1 and got != want for got, want in zip(array.shape, expected, strict=False)
        ):
            raise PayloadError(f"'{where}' has shape {list(array.shape)}; the model takes {list(expected)}")
        check_row_count(rows_of(array), where)
        return self.cast(array, dtype, where)

    def cast(self, array: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
        """Cast to the model's dtype, refusing what the dtype cannot hold."""
        if dtype.kind in "fc":
            if array.dtype.kind not in "iuf":
                raise PayloadError(f"'{where}' must hold numbers, got {v2_datatype(array.dtype)} values")
            values = array.astype(np.float64)
            finite = np.isfinite(values)
            if not self.allow_nan and not finite.all():
                index = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise PayloadError(f"'{where}' value at {list(index)} is {num(values[index])}: {NAN_FIX}")
            limit = float(np.finfo(dtype).max)
            beyond_what = f"beyond what {np.dtype(dtype).name} holds (±{limit:.4g})"
            if dtype == np.float64 and self.float_limit is not None:
                # The signature says float64 but the model was found to hold float32 only: name that type.
                limit, beyond_what = self.float_limit, FLOAT32_LIMIT
            beyond = finite & (np.abs(values) > limit)
            if beyond.any():
                index = tuple(int(i) for i in np.argwhere(beyond)[0])
                raise PayloadError(f"'{where}' value at {list(index)} is {num(values[index])}, {beyond_what}")
            return array.astype(dtype)
        if dtype.kind in "iu":
            if array.dtype.kind == "f":
                bad = ~np.isfinite(array) | (array != np.round(array))
                if bad.any():
                    index = tuple(int(i) for i in np.argwhere(bad)[0])
                    raise PayloadError(f"'{where}' value at {list(index)} is {num(array[index])}, not an integer")
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
            out[index] = text_value(value, want, f"'{where}' value {index}")
        return out.reshape(array.shape)

    def loose_array(self, data: Any, where: str) -> np.ndarray:
        """No signature: a numeric array when every value is a number, text otherwise."""
        if isinstance(data, np.ndarray):
            array = data
        else:
            array = json_array(data, where, None)
        if array.dtype.kind == "f":
            finite = np.isfinite(array)
            if not self.allow_nan and not finite.all():
                index = [int(i) for i in np.argwhere(~finite)[0]]
                raise PayloadError(f"'{where}' value at {index} is {num(array[tuple(index)])}: {NAN_FIX}")
        elif array.dtype.kind == "O":
            for index, value in enumerate(array.reshape(-1).tolist()):
                check_json_value(value, f"'{where}' value {index}", self.allow_nan)
        if array.ndim == 0:
            raise PayloadError(f"'{where}' must be a list of rows")
        check_row_count(len(array), where)
        return array

    def check_records(self, rows: list[dict], where: str) -> None:
        """Records of a model without a signature: their keys and values as JSON, under the NaN policy."""
        for index, row in enumerate(rows):
            for key, value in row.items():
                check_json_value(key, f"{where}[{index}] key", self.allow_nan)
                check_json_value(value, f"{where}[{index}].{safe(key)}", self.allow_nan)
