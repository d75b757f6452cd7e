"""A request's values checked as they were sent, before any signature is applied: JSON lists and their shapes,
V2 data against its declared shape and datatype, text, the NaN policy on untyped JSON; and how a refusal shows
the client's values (`show`, `num`) whatever they hold."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from sandbox.serving.model_io.schema import FLOAT32_MAX, NUMERIC_V2, V2_DTYPES, InputSpec, V2Tensor
from sandbox.wire import MAX_ROWS, MAX_TENSOR_VALUES, PayloadError

FLOAT32_LIMIT = f"beyond what the model's input can hold (float32, ±{FLOAT32_MAX:.4g})"
NAN_FIX = "NaN and infinite values are refused; send finite numbers (or deploy with --allow-nan)"


def safe(text: Any) -> str:
    """Text that can be encoded whatever the client sent (lone surrogates escaped)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def num(value: Any) -> str:
    """A number as a person writes it (nan, inf, 3.5e+38), not numpy's repr."""
    try:
        return repr(float(value))
    except (TypeError, ValueError, OverflowError):
        return show(value)


def show(value: Any) -> str:
    try:
        return safe(repr(value))[:40]
    except ValueError:  # an integer too long for str() (Python's digit limit), somewhere in the value
        return f"<{type(value).__name__} too long to show>"


def check_row_count(rows: int, where: str) -> None:
    if rows == 0:
        raise PayloadError(f"'{where}' is empty: send at least one row")
    if rows > MAX_ROWS:
        raise PayloadError(f"'{where}' has {rows} rows; at most {MAX_ROWS} per request")


def rows_of(array: Any) -> int:
    return len(array) if getattr(array, "ndim", 1) else 1


def check_datatype_for_column(datatype: str | None, spec: InputSpec, where: str) -> None:
    if datatype is None or spec.type == "json":
        return
    if spec.type in ("double", "float", "long", "integer"):
        ok = datatype in NUMERIC_V2
    elif spec.type == "boolean":
        ok = datatype == "BOOL"
    else:
        ok = datatype == "BYTES"
    if not ok:
        raise PayloadError(f"'{where}' is {datatype}; column {spec.name} ({spec.type}) takes {spec.datatype}")


def text_value(value: Any, kind: str, where: str) -> Any:
    if kind == "binary":
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            try:
                return base64.b64decode(value.encode("ascii"), validate=True)
            except (ValueError, UnicodeEncodeError):
                raise PayloadError(f"{where} must be base64-encoded bytes") from None
        raise PayloadError(f"{where} must be base64-encoded bytes, got {show(value)}")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(f"{where} is not valid UTF-8 text") from None
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string, got {show(value)}")
    check_text(value, where)
    if kind == "datetime":
        try:
            return np.datetime64(value, "ns")
        except ValueError:
            raise PayloadError(f"{where} is {show(value)}, not an ISO 8601 date-time") from None
    return value


def check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{where} holds text that is not valid Unicode (a lone surrogate); send UTF-8") from None


def check_json_value(value: Any, where: str, allow_nan: bool, depth: int = 0) -> None:
    if depth > 32:
        raise PayloadError(f"{where} is nested too deeply")
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, float):
        if not allow_nan and not math.isfinite(value):
            raise PayloadError(f"{where} is {num(value)}: {NAN_FIX}")
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, where, allow_nan, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_value(key, where, allow_nan, depth + 1)
            check_json_value(item, where, allow_nan, depth + 1)


def json_array(data: Any, where: str, dtype: np.dtype | None) -> np.ndarray:
    """A JSON (nested) list as an array, refusing ragged lists and values of the wrong kind."""
    if not isinstance(data, list):
        raise PayloadError(f"'{where}' must be a list, got {type(data).__name__}")
    leaves, shape = _leaves(data, where)
    if dtype is not None and np.dtype(dtype).kind in "biufc":
        want_bool = np.dtype(dtype).kind == "b"
        for index, value in enumerate(leaves):
            if want_bool:
                if type(value) is not bool:
                    raise PayloadError(f"'{where}' value {index} is {show(value)}, not true/false")
            elif type(value) not in (int, float):
                raise PayloadError(f"'{where}' value {index} is {show(value)}, not a number")
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


def flat_values(data: Any, shape: list[int], name: str, datatype: str) -> list | np.ndarray:
    """A V2 input's data, flat, checked against its declared shape."""
    needed = shape_size(shape, name) if shape else 0
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
    else:
        if not isinstance(data, list):
            raise PayloadError(f"input '{safe(name)}': 'data' must be a list of values")
        flat, _ = _leaves(data, f"inputs[{safe(name)}]") if any(isinstance(v, list) for v in data) else (data, ())
    if len(flat) != needed:
        raise PayloadError(f"input '{safe(name)}' has {len(flat)} values but shape {shape} needs {needed}")
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
                    raise PayloadError(f"input '{safe(name)}' has values beyond what {datatype} holds")
        elif bad is _NONE and datatype in ("FP32", "FP16") and flat:
            limit = float(np.finfo(V2_DTYPES[datatype]).max)
            if any(abs(v) > limit for v in flat if math.isfinite(v)):
                raise PayloadError(f"input '{safe(name)}' has values beyond what {datatype} holds (±{limit:.4g})")
    if bad is not _NONE:
        raise PayloadError(f"input '{safe(name)}' is {datatype} but holds {show(bad)}; send {want}")


_NONE = object()


def shaped(data: Any, shape: list[int], name: str, datatype: str | None) -> Any:
    """A V2 input's data as an array of its declared shape and datatype."""
    flat = flat_values(data, shape, name, datatype or "BYTES")
    if isinstance(flat, np.ndarray):
        return flat.reshape(shape)
    if datatype == "BYTES":
        out = np.empty(len(flat), dtype=object)
        for index, value in enumerate(flat):
            check_text(value, f"input '{safe(name)}' value {index}")
            out[index] = value
        return out.reshape(shape)
    if datatype == "BOOL":
        return np.array(flat, dtype=np.bool_).reshape(shape)
    try:
        if datatype.startswith(("INT", "UINT")):
            values = [int(v) for v in flat]
            info = np.iinfo(V2_DTYPES[datatype])
            if values and (min(values) < info.min or max(values) > info.max):
                raise PayloadError(f"input '{safe(name)}' has values beyond what {datatype} holds")
            return np.array(values, dtype=V2_DTYPES[datatype]).reshape(shape)
        return np.array(flat, dtype=np.float64).reshape(shape)
    except OverflowError:
        raise PayloadError(f"input '{safe(name)}' holds a number too large to represent") from None


def checked_v2(tensor: V2Tensor) -> V2Tensor:
    """A V2 input whose name, datatype and shape are well-formed (its data is checked against them later), with
    the datatype upper-cased and the shape a list."""
    name, datatype, shape = tensor.name, tensor.datatype, tensor.shape
    if not isinstance(name, str) or not name:
        raise PayloadError('every input needs a "name" (a string)')
    datatype = datatype.upper() if isinstance(datatype, str) else datatype
    if not isinstance(datatype, str) or datatype not in V2_DTYPES:
        raise PayloadError(f"input '{safe(name)}' has datatype {show(datatype)}; use one of {', '.join(V2_DTYPES)}")
    if (
        not isinstance(shape, list | tuple)
        or not shape
        or any(not isinstance(dim, int) or isinstance(dim, bool) or dim < 0 for dim in shape)
    ):
        raise PayloadError(f"input '{safe(name)}' has an invalid shape {show(shape)}; e.g. [1, 8]")
    shape_size(shape, name)
    return V2Tensor(name, datatype, list(shape), tensor.data)


def shape_size(shape: list[int] | tuple[int, ...], name: str) -> int:
    """The values a shape declares, bounded with exact Python ints before numpy sees them (JSON's huge integers
    would wrap in int64 or overflow a C long)."""
    if any(dim > MAX_TENSOR_VALUES for dim in shape):
        raise PayloadError(
            f"input '{safe(name)}' has a shape dimension over {MAX_TENSOR_VALUES}; each holds at most that many"
        )
    if 0 in shape:
        return 0
    needed = 1
    for dim in shape:
        needed *= dim
        if needed > MAX_TENSOR_VALUES:  # stop here: the product of many dimensions is too long to print
            raise PayloadError(
                f"input '{safe(name)}' has shape {show(list(shape))}, over {MAX_TENSOR_VALUES} values; at most "
                f"{MAX_TENSOR_VALUES} per request"
            )
    return needed
