"""Request conversion from MLflow signatures: exact types, errors that name where, nothing but PayloadError."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import infer_signature

from sandbox.serving.model_io import ModelInput, ModelIO, V2Tensor, model_outputs, v1_predictions, v2_outputs_json
from sandbox.serving.model_io.values import shape_size
from sandbox.wire import MAX_ROWS, MAX_TENSOR_VALUES, PayloadError, v1_body, v2_body

MIXED = pd.DataFrame(
    {
        "city": ["paris"],
        "amount": [1.5],
        "count": np.array([2], dtype=np.int64),
        "small": np.array([0.5], dtype=np.float32),
        "flag": [True],
    }
)


def columns_io(**kwargs) -> ModelIO:
    return ModelIO.from_signature(infer_signature(MIXED), **kwargs)


def numeric_io(**kwargs) -> ModelIO:
    return ModelIO.from_signature(infer_signature(pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]})), **kwargs)


def tensor_io(shape=(3, 8, 8)) -> ModelIO:
    return ModelIO.from_signature(infer_signature(np.zeros(shape)))


def frame(io: ModelIO, item: ModelInput) -> pd.DataFrame:
    return io.model_input(item)


def test_columns_are_converted_to_the_declared_types():
    io = columns_io()
    item = io.from_v1({"instances": [{"city": "lyon", "amount": 2, "count": 3, "small": 0.25, "flag": False}]})
    df = frame(io, item)
    assert list(df.columns) == ["city", "amount", "count", "small", "flag"]
    assert df.dtypes.astype(str).tolist() == ["object", "float64", "int64", "float32", "bool"]
    assert df.iloc[0].tolist() == ["lyon", 2.0, 3, 0.25, False]


def test_v1_rows_in_column_order_and_v2_per_column_inputs_agree():
    io = columns_io()
    by_rows = frame(io, io.from_v1({"instances": [["nice", 1.0, 4, 0.5, True]]}))
    by_inputs = frame(
        io,
        io.from_v2(
            [
                V2Tensor("city", "BYTES", [1], ["nice"]),
                V2Tensor("amount", "FP64", [1], [1.0]),
                V2Tensor("count", "INT64", [1], [4]),
                V2Tensor("small", "FP32", [1, 1], [[0.5]]),
                V2Tensor("flag", "BOOL", [1], [True]),
            ]
        ),
    )
    pd.testing.assert_frame_equal(by_rows, by_inputs)


def test_one_rows_by_columns_tensor_for_numeric_columns():
    io = numeric_io()
    item = io.from_v2([V2Tensor("input-0", "FP64", [2, 3], [1, 2, 3, 4, 5, 6])])
    assert frame(io, item).to_numpy().tolist() == [[1, 2, 3], [4, 5, 6]]
    assert frame(io, io.from_v1(v1_body([[1, 2, 3]]))).to_numpy().tolist() == [[1, 2, 3]]
    tensor = v2_body([[7, 8, 9]])["inputs"][0]
    item = io.from_v2([V2Tensor.from_json(tensor)])
    assert frame(io, item).to_numpy().tolist() == [[7, 8, 9]]


@pytest.mark.parametrize(
    "body, message",
    [
        ([1, 2], "must be a JSON object"),
        ({}, 'missing "instances"'),
        ({"instances": "x"}, "must be a list of rows"),
        ({"instances": []}, "is empty"),
        ({"instances": [[1, 2]]}, "has 2 values; the model expects 3"),
        ({"instances": [[1, "2", 3]]}, r"instances\[0\]\[1\] \(b\) must be a number"),
        ({"instances": [[1, True, 3]]}, "must be a number, got True"),
        ({"instances": [[1, None, 3]]}, "must be a number, got None"),
        ({"instances": [1, 2, 3]}, "must be a list of 3 values"),
        ({"instances": [{"a": 1, "b": 2}]}, "lacks column"),
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, "unknown column"),
        ({"instances": [[0, 0, 0]] * (MAX_ROWS + 1)}, "at most"),
        ({"instances": [[1, float("nan"), 3]]}, r"instances\[0\]\[1\] \(b\) is nan: NaN and infinite"),
        ({"instances": [[1, 2, float("inf")]]}, r"instances\[0\]\[2\] \(c\) is inf"),
    ],
)
def test_v1_errors_name_the_problem(body, message):
    with pytest.raises(PayloadError, match=message):
        numeric_io().from_v1(body)


@pytest.mark.parametrize(
    "tensors, message",
    [
        ([], "is empty"),
        ([V2Tensor("x", "BYTES", [1, 3], ["a", "b", "c"])], "column a \\(double\\) takes FP64"),
        ([V2Tensor("x", "FP64", [1, 3], [1, 2])], "has 2 values but shape"),
        ([V2Tensor("x", "FP64", [1, 2], [1, 2])], r"expected \[rows, 3\]"),
        ([V2Tensor("x", "FP64", [-1, 3], [1, 2, 3])], "invalid shape"),
        ([V2Tensor("x", "FP64", [1, 3], ["a", 2, 3])], "holds 'a'"),
        ([V2Tensor("x", "INT8", [1, 3], [1000, 2, 3])], "beyond what INT8 holds"),
        ([V2Tensor("x", "FP64", [1, 3], "abc")], "must be a list"),
        ([V2Tensor("x", "NOPE", [1, 3], [1, 2, 3])], "datatype 'NOPE'"),
        ([V2Tensor("a", "FP64", [1], [1])], "missing input"),
        (
            [V2Tensor("a", "FP64", [1], [math.nan]), V2Tensor("b", "FP64", [1], [1]), V2Tensor("c", "FP64", [1], [1])],
            r"inputs\[a\]\[0\]",
        ),
    ],
)
def test_v2_errors_name_the_problem(tensors, message):
    with pytest.raises(PayloadError, match=message):
        numeric_io().from_v2(tensors)


def test_nan_is_passed_on_when_the_deployment_allows_it():
    io = numeric_io(allow_nan=True)
    df = frame(io, io.from_v1({"instances": [[1, float("nan"), 3]]}))
    assert math.isnan(df.iloc[0, 1])


def test_values_beyond_the_models_float32_are_refused_once_learnt():
    io = numeric_io()
    assert frame(io, io.from_v1({"instances": [[3.5e38, 0, 0]]})).iloc[0, 0] == 3.5e38
    io.float_limit = float(np.finfo(np.float32).max)
    with pytest.raises(PayloadError, match=r"\(a\) is 3.5e\+38, beyond what the model's input can hold"):
        io.from_v1({"instances": [[3.5e38, 0, 0]]})
    with pytest.raises(PayloadError, match="beyond"):
        io.from_v2([V2Tensor("x", "FP64", [1, 3], [0, -3.5e38, 0])])


def test_float_columns_refuse_values_float32_cannot_hold():
    with pytest.raises(PayloadError, match="float32"):
        columns_io().from_v1({"instances": [["a", 1.0, 1, 1e39, True]]})


def test_text_must_be_valid_unicode():
    with pytest.raises(PayloadError, match="not valid Unicode"):
        columns_io().from_v1({"instances": [["\ud800", 1.0, 1, 1.0, True]]})
    with pytest.raises(PayloadError, match="unknown column"):
        numeric_io().from_v1({"instances": [{"\ud800": 1}]})


def test_integer_columns_refuse_fractions_and_out_of_range_values():
    io = columns_io()
    with pytest.raises(PayloadError, match=r"must be an integer, got 1.5"):
        io.from_v1({"instances": [["a", 1.0, 1.5, 1.0, True]]})
    with pytest.raises(PayloadError, match="beyond the long column's range"):
        io.from_v1({"instances": [["a", 1.0, 2**70, 1.0, True]]})


def test_tensor_models_get_the_declared_shape_and_dtype():
    io = tensor_io()
    image = np.arange(64, dtype=float).reshape(8, 8)
    item = io.from_v1({"instances": [image.tolist()]})
    assert item.value.shape == (1, 8, 8) and item.value.dtype == np.float64
    item = io.from_v2([V2Tensor("input-0", "FP32", [1, 8, 8], image.reshape(-1).tolist())])
    assert item.value.tolist() == [image.tolist()]
    with pytest.raises(PayloadError, match=r"has shape \[1, 8\]; the model takes \[-1, 8, 8\]"):
        io.from_v1({"instances": [[1.0] * 8]})
    with pytest.raises(PayloadError, match="ragged"):
        io.from_v1({"instances": [[[1.0] * 8] * 7 + [[1.0] * 7]]})


def test_integer_tensors_refuse_values_their_dtype_cannot_hold():
    io = ModelIO.from_signature(infer_signature(np.zeros((2, 3), dtype=np.int32)))
    assert io.from_v1({"instances": [[1, 2, 3]]}).value.dtype == np.int32
    with pytest.raises(PayloadError, match="beyond what int32 holds"):
        io.from_v1({"instances": [[1, 2, 2**40]]})
    with pytest.raises(PayloadError, match="not an integer"):
        io.from_v2([V2Tensor("x", "FP64", [1, 3], [1, 2, 3.5])])


def test_models_without_a_signature_take_records_or_arrays():
    io = ModelIO.from_signature(None)
    assert io.kind == "unknown" and io.metadata_inputs() == []
    table = io.model_input(io.from_v1({"instances": [{"x": 1, "y": "a"}]}))
    assert isinstance(table, pd.DataFrame) and table.to_dict("records") == [{"x": 1, "y": "a"}]
    array = io.model_input(io.from_v1({"instances": [[1.5, 2.0]]}))
    assert array.tolist() == [[1.5, 2.0]]
    with pytest.raises(PayloadError, match="NaN"):
        io.from_v1({"instances": [[1.0, float("nan")]]})


def test_batches_combine_and_answers_split_back():
    io = numeric_io()
    first, second = io.from_v1({"instances": [[1, 2, 3]]}), io.from_v1({"instances": [[4, 5, 6], [7, 8, 9]]})
    combined = io.combine([first, second])
    assert combined.rows == 3
    assert io.model_input(combined).to_numpy().tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert io.features(combined).shape == (3, 3)
    assert io.features(columns_io().from_v1({"instances": [["a", 1.0, 1, 1.0, True]]})) is None


def test_outputs_of_every_shape():
    frame_out = model_outputs(pd.DataFrame({"label": ["high", "low"], "score": [1.5, 0.25]}))
    assert [(o.name, o.datatype) for o in frame_out] == [("label", "BYTES"), ("score", "FP64")]
    assert v1_predictions(frame_out) == [{"label": "high", "score": 1.5}, {"label": "low", "score": 0.25}]
    proba = model_outputs(np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert v2_outputs_json(proba) == [
        {"name": "predict", "datatype": "FP64", "shape": [2, 2], "data": [0.2, 0.8, 0.6, 0.4]}
    ]
    assert v1_predictions(model_outputs(["a", "b"])) == ["a", "b"]
    assert v1_predictions(model_outputs(pd.Series([1, 2]))) == [1, 2]


# --------------------------------------------------------------------------- fuzzing

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
datatypes = st.sampled_from(["FP64", "FP32", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP16", "x", ""])
tensors = st.builds(
    V2Tensor,
    name=st.one_of(st.text(max_size=8), st.sampled_from(["input-0", "a", "city", "amount"]), st.none()),
    datatype=st.one_of(datatypes, json_values),
    shape=st.one_of(st.lists(st.integers(-2, 9), max_size=3), json_values),
    data=json_values,
)
IOS = {"numeric": numeric_io(), "columns": columns_io(), "tensor": tensor_io(), "unknown": ModelIO.from_signature(None)}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(json_values, st.fixed_dictionaries({"instances": json_values})), kind=st.sampled_from(list(IOS)))
def test_any_v1_body_is_converted_or_refused_with_a_payload_error(body, kind):
    io = IOS[kind]
    try:
        item = io.from_v1(body)
    except PayloadError as exc:
        assert str(exc)
        return
    assert item.rows >= 1
    io.model_input(item)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=st.lists(tensors, max_size=3), kind=st.sampled_from(list(IOS)))
def test_any_v2_inputs_are_converted_or_refused_with_a_payload_error(inputs, kind):
    io = IOS[kind]
    try:
        item = io.from_v2(inputs)
    except PayloadError as exc:
        assert str(exc)
        return
    assert item.rows >= 1
    io.model_input(item)


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(st.integers(0, 2**64) | st.sampled_from([2**63 - 1, 10**309, 10**7]), max_size=6))
def test_a_shape_is_bounded_exactly_before_numpy_sees_it(shape):
    # Huge JSON integers (kept exact by Python's json) neither wrap in int64 nor overflow a C long.
    exact = math.prod(shape)
    if exact <= MAX_TENSOR_VALUES and all(dim <= MAX_TENSOR_VALUES for dim in shape):
        assert shape_size(shape, "x") == exact
    else:
        with pytest.raises(PayloadError, match="at most"):
            shape_size(shape, "x")
