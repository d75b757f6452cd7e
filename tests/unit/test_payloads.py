import numpy as np
import pytest

from sandbox.serving.payloads import (
    MAX_ROWS,
    FeatureSchema,
    PayloadError,
    V2Input,
    parse_v1,
    parse_v2,
    v1_body,
    v2_body,
    v2_datatype,
)

SCHEMA = FeatureSchema(names=("a", "b", "c"), types=("double", "double", "long"))


def test_v1_rows_and_objects():
    assert parse_v1({"instances": [[1, 2, 3], [4.5, 5, 6]]}, SCHEMA).tolist() == [[1, 2, 3], [4.5, 5, 6]]
    assert parse_v1({"inputs": [{"a": 1, "b": 2, "c": 3}]}, SCHEMA).tolist() == [[1, 2, 3]]


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
        ({"instances": [1, 2, 3]}, "must be a list of 3 numbers"),
        ({"instances": [{"a": 1, "b": 2}]}, "lacks feature"),
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, "unknown feature"),
        ({"instances": [[0, 0, 0]] * (MAX_ROWS + 1)}, "at most"),
    ],
)
def test_v1_errors_name_the_problem(body, message):
    with pytest.raises(PayloadError, match=message):
        parse_v1(body, SCHEMA)


def test_v2_single_tensor_and_per_feature_inputs():
    single = [V2Input("input-0", [2, 3], "FP64", [1, 2, 3, 4, 5, 6])]
    assert parse_v2(single, SCHEMA).tolist() == [[1, 2, 3], [4, 5, 6]]
    nested = [V2Input("input-0", [2, 3], "FP32", [[1, 2, 3], [4, 5, 6]])]
    assert parse_v2(nested, SCHEMA).shape == (2, 3)
    per_feature = [V2Input(name, [2], "FP64", [i, i + 10]) for i, name in enumerate("abc")]
    assert parse_v2(per_feature, SCHEMA).tolist() == [[0, 1, 2], [10, 11, 12]]


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([], "is empty"),
        ([V2Input("x", [1, 3], "BYTES", ["a", "b", "c"])], "datatype 'BYTES'"),
        ([V2Input("x", [1, 3], "FP64", [1, 2])], "has 2 values but shape"),
        ([V2Input("x", [1, 2], "FP64", [1, 2])], r"expected \[rows, 3\]"),
        ([V2Input("x", [-1, 3], "FP64", [1, 2, 3])], "invalid shape"),
        ([V2Input("x", [1, 3], "FP64", ["a", 2, 3])], "value 0 is 'a'"),
        ([V2Input("x", [1, 3], "INT8", [1000, 2, 3])], "out of bounds"),
        ([V2Input("x", [1, 3], "FP64", "abc")], "must be a list"),
        ([V2Input("a", [1], "FP64", [1])], "missing input"),
    ],
)
def test_v2_errors_name_the_problem(inputs, message):
    with pytest.raises(PayloadError, match=message):
        parse_v2(inputs, SCHEMA)


def test_builders_round_trip_through_the_parsers():
    rows = np.arange(6, dtype=float).reshape(2, 3)
    assert parse_v1(v1_body(rows), SCHEMA).tolist() == rows.tolist()
    tensor = v2_body(rows)["inputs"][0]
    parsed = parse_v2([V2Input(tensor["name"], tensor["shape"], tensor["datatype"], tensor["data"])], SCHEMA)
    assert parsed.tolist() == rows.tolist()


def test_v2_datatype():
    assert v2_datatype(np.array([1, 2])) == "INT64"
    assert v2_datatype(np.array([0.5])) == "FP64"
    assert v2_datatype(np.array([True])) == "BOOL"


def test_schema_from_signature_rejects_strings():
    import pandas as pd
    from mlflow.models import infer_signature

    numeric = infer_signature(pd.DataFrame({"x": [1.0], "n": [2]}))
    schema = FeatureSchema.from_mlflow_signature(numeric)
    assert schema.names == ("x", "n") and schema.width == 2
    with pytest.raises(PayloadError, match="only numeric"):
        FeatureSchema.from_mlflow_signature(infer_signature(pd.DataFrame({"s": ["a"]})))
    with pytest.raises(PayloadError, match="no input signature"):
        FeatureSchema.from_mlflow_signature(None)
